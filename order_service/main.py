"""Wiring of the order service: settings -> app, subscriptions, the deadline sweep, resources."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from choreo import records
from choreo.service import Service, Subscription
from order_service import handlers, inventory
from order_service.api import ERROR_STATUSES, router
from order_service.config import Settings
from order_service.sweep import run_deadline_sweep


def subscriptions() -> tuple[Subscription, ...]:
    return (
        Subscription(records.StockReserved, handlers.on_stock_reserved),
        Subscription(records.StockRejected, handlers.on_stock_rejected),
        Subscription(records.PaymentSucceeded, handlers.on_payment_succeeded),
        Subscription(records.PaymentFailed, handlers.on_payment_failed),
    )


def build(settings: Settings | None = None) -> Service:
    settings = settings or Settings()

    async def sweep(stopping: asyncio.Event) -> None:
        await run_deadline_sweep(
            stopping,
            service.unit_of_work(),
            interval_seconds=settings.sweep_interval_seconds,
            batch_size=settings.sweep_batch_size,
        )

    service = Service(
        settings,
        routers=[router],
        subscriptions=subscriptions(),
        error_statuses=ERROR_STATUSES,
        background=[sweep],
        resources={
            "inventory": inventory.InventoryClient(
                inventory.http_client(settings.inventory_service_url)
            ),
            "saga_timeout": timedelta(seconds=settings.saga_timeout_seconds),
        },
    )
    return service


if __name__ == "__main__":
    build().run()
