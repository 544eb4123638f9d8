"""Wiring of the payment service: settings -> app, subscriptions, the open-intent sweep and
the review sweep (now, then periodically; replicas may all sweep)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from choreo import records
from choreo.service import PeriodicJob, Service, Subscription
from payment_service import domain, handlers
from payment_service.api import ERROR_STATUSES, WebhookVerification, router
from payment_service.config import Settings
from payment_service.faults import Faults
from payment_service.stripe_client import StripeGateway


def subscriptions() -> tuple[Subscription, ...]:
    return (
        Subscription(records.OrderCreated, handlers.on_order_created),
        Subscription(records.StockReserved, handlers.on_stock_reserved),
        Subscription(records.OrderCancelled, handlers.on_order_cancelled),
        Subscription(records.UserRegistered, handlers.on_user_registered),
        Subscription(records.UserUpdated, handlers.on_user_updated),
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

    def resources(service: Service) -> dict[str, object]:
        charging = handlers.Charging(
            gateway=gateway,
            # Phase one of a charge commits on the independent pool: a handler holding a
            # connection (and its order's row lock) never waits behind the other handlers for
            # a second one, however many partitions are worked at once.
            new_unit_of_work=service.independent_unit_of_work(),
            charge_margin=timedelta(seconds=settings.charge_margin_seconds),
            now=now,
            screening=handlers.Screening(
                policy=settings.risk_policy,
                new_unit_of_work=service.independent_unit_of_work(),
                timeout=timedelta(seconds=settings.risk_timeout_seconds),
                review_expiry=timedelta(seconds=settings.risk_review_expiry_seconds),
            ),
            faults=Faults(
                kill_after_create=settings.fault_kill_after_create,
                kill_after_confirm=settings.fault_kill_after_confirm,
                delay_after_confirm_seconds=settings.fault_delay_after_confirm_seconds,
            ),
        )
        return {
            "gateway": gateway,
            "charging": charging,
            "webhook_verification": WebhookVerification(
                secret=settings.webhook_secret,
                tolerance_seconds=settings.stripe_webhook_tolerance_seconds,
            ),
            "card_intake": domain.CardIntake.of_environment(settings.env),
        }

    async def sweep_open_intents() -> None:
        """The intents the provider holds open for this service's orders (handlers/intents.py):
        settled or cancelled, each under its order's row lock (skipped when held); each pass
        lists from where the last one, of this process or an earlier one, left intents open."""
        await handlers.sweep_open_intents(
            service.unit_of_work(),
            service.resource("charging", handlers.Charging),
            grace=timedelta(seconds=settings.intent_sweep_grace_seconds),
        )

    async def expire_reviews() -> None:
        await handlers.expire_reviews(
            service.unit_of_work(), service.resource("charging", handlers.Charging)
        )

    service = Service(
        settings,
        routers=[router],
        subscriptions=subscriptions(),
        error_statuses=ERROR_STATUSES,
        periodic=[
            PeriodicJob(
                "the open-intent sweep", settings.intent_sweep_interval_seconds, sweep_open_intents
            ),
            PeriodicJob(
                "the review sweep", settings.risk_review_sweep_interval_seconds, expire_reviews
            ),
        ],
        resources=resources,
    )
    return service


if __name__ == "__main__":
    build().run()
