"""Wiring of the order service: settings -> app, subscriptions, the deadline sweep, resources.

The deadline sweep cancels (TIMEOUT) the orders the saga did not decide in time; replicas may
all sweep: each batch skips the rows another one holds."""

from __future__ import annotations

from datetime import timedelta

from choreo import records
from choreo.service import PeriodicJob, Service, Subscription
from order_service import handlers, inventory
from order_service.api import ERROR_STATUSES, router
from order_service.config import Settings


def subscriptions() -> tuple[Subscription, ...]:
    return (
        Subscription(records.StockReserved, handlers.on_stock_reserved),
        Subscription(records.StockRejected, handlers.on_stock_rejected),
        Subscription(records.PaymentSucceeded, handlers.on_payment_succeeded),
        Subscription(records.PaymentFailed, handlers.on_payment_failed),
        Subscription(records.PaymentRefunded, handlers.on_payment_refunded),
        Subscription(records.RiskAssessed, handlers.on_risk_assessed),
        Subscription(records.PaymentActionRequired, handlers.on_payment_action_required),
    )


def build(settings: Settings | None = None) -> Service:
    settings = settings or Settings()

    async def cancel_overdue_orders() -> None:
        """Batch after batch, until a batch comes back short (replicas skip each other's)."""
        batch = cancelled = settings.sweep_batch_size
        while cancelled == batch:
            uow = service.unit_of_work()()
            cancelled = await handlers.cancel_overdue_orders(uow, batch_size=batch)

    service = Service(
        settings,
        routers=[router],
        subscriptions=subscriptions(),
        error_statuses=ERROR_STATUSES,
        periodic=[
            PeriodicJob(
                "the deadline sweep", settings.sweep_interval_seconds, cancel_overdue_orders
            )
        ],
        resources={
            "inventory": inventory.InventoryClient(settings.inventory_service_url),
            "saga_timeout": timedelta(seconds=settings.saga_timeout_seconds),
            "payment_action_timeout": timedelta(seconds=settings.payment_action_timeout_seconds),
        },
    )
    return service


if __name__ == "__main__":
    build().run()
