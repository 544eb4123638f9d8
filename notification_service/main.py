"""Wiring of the notification service: settings -> app, subscriptions, relay, the listener of
the live notification stream."""

from __future__ import annotations

from choreo import records
from choreo.listener import Listener
from choreo.service import Service, Subscription
from notification_service import handlers
from notification_service.api import ERROR_STATUSES, router
from notification_service.config import Settings
from notification_service.deliveries import Postman
from notification_service.keys import NO_KEY_WARNING, load_sealing_key
from notification_service.messages import Renderer
from notification_service.sendgrid_mailer import SendGridMailer
from notification_service.stream import CHANNEL
from notification_service.twilio_sender import TwilioSender


def subscriptions() -> tuple[Subscription, ...]:
    return (
        Subscription(records.UserRegistered, handlers.on_user_registered),
        Subscription(records.UserUpdated, handlers.on_user_updated),
        Subscription(records.UserDeleted, handlers.on_user_deleted),
        Subscription(
            records.NotificationPreferencesChanged, handlers.on_notification_preferences_changed
        ),
        Subscription(records.PasswordResetRequested, handlers.on_password_reset_requested),
        Subscription(records.OrderCreated, handlers.on_order_created),
        Subscription(records.OrderConfirmed, handlers.on_order_confirmed),
        Subscription(records.OrderCancelled, handlers.on_order_cancelled),
        Subscription(records.PaymentFailed, handlers.on_payment_failed),
        Subscription(records.PaymentActionRequired, handlers.on_payment_action_required),
        Subscription(records.PaymentRefunded, handlers.on_payment_refunded),
        Subscription(records.LowStockDetected, handlers.on_low_stock_detected),
    )


def build(settings: Settings | None = None) -> Service:
    settings = settings or Settings()
    reset_token_opener = load_sealing_key(settings)
    mailer = SendGridMailer(
        settings.sendgrid_key,
        settings.sendgrid_host,
        settings.from_email,
        timeout_seconds=settings.send_timeout_seconds,
    )
    sms_sender = (
        None
        if not settings.sms_enabled
        else TwilioSender(
            settings.twilio_account_sid,
            settings.twilio_token,
            settings.twilio_api_base,
            settings.sms_from,
            timeout_seconds=settings.send_timeout_seconds,
        )
    )

    def resources(service: Service) -> dict[str, object]:
        # Claims, outcomes and replica facts commit on the independent pool: a handler holding
        # its connection never waits behind the other handlers for a second one.
        new_unit_of_work = service.independent_unit_of_work()
        notifier = handlers.Notifier(
            renderer=Renderer(),
            postman=Postman(mailer, new_unit_of_work, sms_sender),
            new_unit_of_work=new_unit_of_work,
            password_reset_url=settings.password_reset_url,
            reset_token_opener=reset_token_opener,
        )
        # The mailer is listed so that the service closes its connections when it stops.
        return {"notifier": notifier, "sms_sender": sms_sender, "mailer": mailer}

    return Service(
        settings,
        routers=[router],
        subscriptions=subscriptions(),
        error_statuses=ERROR_STATUSES,
        resources=resources,
        listeners=[Listener(CHANNEL)],
        start_up_warnings=[] if reset_token_opener else [NO_KEY_WARNING],
    )


if __name__ == "__main__":
    build().run()
