"""Wiring of the inventory service: settings -> app, subscriptions, relay."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from choreo import records
from choreo.service import Service, Subscription
from inventory_service import handlers
from inventory_service.api import ERROR_STATUSES, router
from inventory_service.config import Settings


def subscriptions() -> tuple[Subscription, ...]:
    return (
        Subscription(records.OrderCreated, handlers.on_order_created),
        Subscription(records.PaymentFailed, handlers.on_payment_failed),
        Subscription(records.OrderConfirmed, handlers.on_order_confirmed),
        Subscription(records.OrderCancelled, handlers.on_order_cancelled),
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


def build(settings: Settings | None = None, *, now: Callable[[], datetime] = utc_now) -> Service:
    """The service; `now` is the clock its deadline decisions read (tests move it)."""
    return Service(
        settings or Settings(),
        routers=[router],
        subscriptions=subscriptions(),
        error_statuses=ERROR_STATUSES,
        resources={"now": now},
    )


if __name__ == "__main__":
    build().run()
