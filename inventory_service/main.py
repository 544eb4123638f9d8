"""Wiring of the inventory service: settings -> app, subscriptions, relay."""

from __future__ import annotations

from choreo.pagination import InvalidCursorError
from choreo.service import Service, Subscription
from inventory_service import domain, handlers
from inventory_service.api import router
from inventory_service.config import Settings

SUBSCRIPTIONS = (
    Subscription("order.create", {"OrderCreated": handlers.on_order_created}),
    Subscription("payment.event", {"PaymentFailed": handlers.on_payment_failed}),
    Subscription(
        "order.event",
        {
            "OrderConfirmed": handlers.on_order_confirmed,
            "OrderCancelled": handlers.on_order_cancelled,
        },
    ),
)

ERROR_STATUSES: dict[type[Exception], tuple[int, str]] = {
    domain.ProductNotFoundError: (404, "product_not_found"),
    domain.InsufficientStockError: (409, "insufficient_stock"),
    domain.StockLimitError: (409, "stock_limit_exceeded"),
    domain.InvalidQuantityError: (422, "validation_error"),
    InvalidCursorError: (422, "invalid_cursor"),
}


def build(settings: Settings | None = None) -> Service:
    return Service(
        settings or Settings(),
        routers=[router],
        subscriptions=SUBSCRIPTIONS,
        error_statuses=ERROR_STATUSES,
    )


if __name__ == "__main__":
    build().run()
