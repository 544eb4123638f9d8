"""Wiring of the payment service: settings -> app, subscriptions, relay."""

from __future__ import annotations

from functools import partial

from choreo.db import UnitOfWork
from choreo.service import Service, Subscription
from payment_service import domain, handlers
from payment_service.api import router
from payment_service.config import Settings
from payment_service.faults import Faults
from payment_service.gateway import StripeGateway
from payment_service.queries import InvalidCursorError

ERROR_STATUSES: dict[type[Exception], tuple[int, str]] = {
    domain.PaymentMethodNotFoundError: (404, "payment_method_not_found"),
    domain.ProviderUnavailableError: (503, "payment_provider_unavailable"),
    domain.ProviderError: (502, "payment_provider_error"),
    InvalidCursorError: (422, "invalid_cursor"),
}


def subscriptions(charging: handlers.Charging) -> tuple[Subscription, ...]:
    return (
        Subscription(
            "order.create", {"OrderCreated": partial(handlers.on_order_created, charging=charging)}
        ),
        Subscription(
            "stock.updated",
            {"StockReserved": partial(handlers.on_stock_reserved, charging=charging)},
        ),
        Subscription(
            "order.event",
            {"OrderCancelled": partial(handlers.on_order_cancelled, charging=charging)},
        ),
    )


def build(settings: Settings | None = None) -> Service:
    settings = settings or Settings()
    gateway = StripeGateway(
        settings.stripe_secret_key,
        settings.stripe_api_base,
        timeout_seconds=settings.stripe_timeout_seconds,
    )

    # Phase one of a charge commits through the service's own engine; the service (and so its
    # unit-of-work factory) exists only once it is built with the handlers that need it.
    def new_unit_of_work() -> UnitOfWork:
        return service.unit_of_work()()

    charging = handlers.Charging(
        gateway=gateway,
        new_unit_of_work=new_unit_of_work,
        faults=Faults(
            kill_after_confirm=settings.fault_kill_after_confirm,
            delay_after_confirm_seconds=settings.fault_delay_after_confirm_seconds,
        ),
    )
    service = Service(
        settings,
        routers=[router],
        subscriptions=subscriptions(charging),
        error_statuses=ERROR_STATUSES,
        resources={"gateway": gateway},
    )
    return service


if __name__ == "__main__":
    build().run()
