"""Wiring of the gateway: settings -> app (it keeps no state and consumes no events)."""

from __future__ import annotations

from choreo.service import Service
from gateway_service.config import Settings


def build(settings: Settings | None = None) -> Service:
    return Service(settings or Settings())


if __name__ == "__main__":
    build().run()
