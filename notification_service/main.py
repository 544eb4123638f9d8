"""Wiring of the notification service: settings -> app, subscriptions, relay."""

from __future__ import annotations

from choreo.service import Service
from notification_service.config import Settings


def build(settings: Settings | None = None) -> Service:
    return Service(settings or Settings())


if __name__ == "__main__":
    build().run()
