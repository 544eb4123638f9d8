"""Wiring of the payment service: settings -> app, subscriptions, the open-intent sweep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

from choreo import records
from choreo.db import create_engine, unit_of_work_factory
from choreo.pagination import InvalidCursorError
from choreo.service import ConfigurationError, Service, Subscription
from payment_service import domain, handlers
from payment_service.api import router
from payment_service.config import Settings
from payment_service.faults import Faults
from payment_service.gateway import StripeGateway
from payment_service.sweep import run_intent_sweep

ERROR_STATUSES: dict[type[Exception], tuple[int, str]] = {
    domain.PaymentMethodNotFoundError: (404, "payment_method_not_found"),
    domain.ProviderUnavailableError: (503, "payment_provider_unavailable"),
    domain.ProviderError: (502, "payment_provider_error"),
    InvalidCursorError: (422, "invalid_cursor"),
}


def subscriptions() -> tuple[Subscription, ...]:
    return (
        Subscription(records.OrderCreated, handlers.on_order_created),
        Subscription(records.StockReserved, handlers.on_stock_reserved),
        Subscription(records.OrderCancelled, handlers.on_order_cancelled),
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


def build(settings: Settings | None = None, *, now: Callable[[], datetime] = utc_now) -> Service:
    """The service; `now` is the clock its deadline decisions read (tests move it)."""
    settings = settings or Settings()
    gateway = StripeGateway(
        settings.stripe_secret_key,
        settings.stripe_api_base,
        timeout_seconds=settings.stripe_timeout_seconds,
    )

    dsn = settings.database_dsn
    if dsn is None:  # Settings refuse to load without one; this keeps the type exact
        raise ConfigurationError("the payment service has no database")
    # Phase one of a charge commits through a small pool of its own: a handler holding a
    # connection (and its order's row lock) never waits behind the other handlers for a second
    # one, however many partitions are worked at once.
    phase_one = create_engine(dsn, pool_size=2)
    phase_one_closing = AsyncExitStack()  # an aclose() the service calls when it stops
    phase_one_closing.push_async_callback(phase_one.dispose)
    charging = handlers.Charging(
        gateway=gateway,
        new_unit_of_work=unit_of_work_factory(phase_one),
        charge_margin=timedelta(seconds=settings.charge_margin_seconds),
        now=now,
        faults=Faults(
            kill_after_create=settings.fault_kill_after_create,
            kill_after_confirm=settings.fault_kill_after_confirm,
            delay_after_confirm_seconds=settings.fault_delay_after_confirm_seconds,
        ),
    )

    async def sweep(stopping: asyncio.Event) -> None:
        await run_intent_sweep(
            stopping,
            service.unit_of_work(),
            charging,
            interval_seconds=settings.intent_sweep_interval_seconds,
            grace=timedelta(seconds=settings.intent_sweep_grace_seconds),
        )

    service = Service(
        settings,
        routers=[router],
        subscriptions=subscriptions(),
        error_statuses=ERROR_STATUSES,
        background=[sweep],
        resources={
            "gateway": gateway,
            "charging": charging,
            "phase_one_pool": phase_one_closing,
            "card_intake": domain.CardIntake.of_environment(settings.env),
        },
    )
    return service


if __name__ == "__main__":
    build().run()
