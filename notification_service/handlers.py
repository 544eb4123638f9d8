"""The notification service's handlers: one async function per event consumed or command served.

Facts first: the contact a UserRegistered carries and the order an OrderCreated carries are
committed on their own, before the e-mail of that same event is sent, so that notifications
waiting for them do not also wait for that e-mail (or its retries, or its dead letter).

A cancellation is committed the same way before its e-mail, and a notification it makes untrue
(domain.CONTRADICTED_BY_CANCELLATION) handled after it is not sent at all.

Then each notification finds its recipient — raising NotKnownYetError, which the consumer
retries, while the contact or order has not arrived (topics are consumed concurrently) —
renders its message, and goes by the channels the recipient chose for its kind (the
`preferences` replica, the defaults until a NotificationPreferencesChanged is seen;
domain.plan_channels): the e-mail and the SMS each at most once (deliveries.py), the in-app
notification in the handler's transaction. A deleted user gets none of them.

A password reset is e-mail only, to the address its event names: the body carries the reset
token, so no in-app notification keeps it, `deliveries` holds no body, and no log line names it.
The token arrives sealed to this service's key (choreo.sealing) and is opened only here, just
before the e-mail; one that does not open is dead-lettered, never mailed without its token.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from choreo import records
from choreo.db import UnitOfWork, UnitOfWorkFactory
from choreo.events import Event
from choreo.sealing import Opener, SealedValueError, password_reset_context
from choreo.sql import Session
from notification_service.deliveries import Delivery, Postman
from notification_service.domain import (
    ADMIN_ROLE,
    CONTRADICTED_BY_CANCELLATION,
    Channel,
    ChosenChannels,
    Contact,
    Kind,
    NotificationNotFoundError,
    NotKnownYetError,
    ResetTokenUnreadableError,
    cancel_reason_in_words,
    chosen_channels,
    count_of,
    decline_reason_in_words,
    format_money,
    order_reference,
    plan_channels,
    printable_name,
    sms_number,
)
from notification_service.messages import Renderer
from notification_service.sendgrid_mailer import Email
from notification_service.tables import (
    contacts,
    notifications,
    order_cancellations,
    orders,
    preferences,
)
from notification_service.twilio_sender import Sms

log = logging.getLogger(__name__)

# What the user service makes (secrets.token_urlsafe), and all a link may carry.
_RESET_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


@dataclass(frozen=True)
class Notifier:
    """What notifying needs besides the handler's own unit of work."""

    renderer: Renderer
    postman: Postman
    # Commits the replicas' facts apart from the handler's transaction (see the docstring).
    new_unit_of_work: UnitOfWorkFactory
    # The reset link, to which a password-reset token is appended.
    password_reset_url: str = "http://127.0.0.1:8000/reset-password?token="
    # Opens the reset tokens the user service seals to this service's key; None without one.
    reset_token_opener: Opener | None = None


# user.event: the contact replica.


async def on_user_registered(
    record: records.UserRegistered,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    notifier: Notifier,
) -> None:
    async with notifier.new_unit_of_work() as facts:
        await _remember_contact(
            facts.session,
            record.user_id,
            email=record.email,
            full_name=record.full_name,
            details_at=record.registered_at,
            role=record.role,
            phone=None,
        )
    await _notify_user(uow, notifier, event, record.user_id, Kind.WELCOME, {})


async def on_user_updated(record: records.UserUpdated, uow: UnitOfWork) -> None:
    await _remember_contact(
        uow.session,
        record.user_id,
        email=record.email,
        full_name=record.full_name,
        details_at=record.updated_at,
        role=None,
        phone=record.phone,
    )


async def on_notification_preferences_changed(
    record: records.NotificationPreferencesChanged, uow: UnitOfWork
) -> None:
    """Keep the user's preferences as the newest event says (they arrive whole, not as diffs:
    an older one, redelivered or late, changes nothing)."""
    channels = {
        preference.kind: {
            Channel.EMAIL.value: preference.email,
            Channel.SMS.value: preference.sms,
            Channel.IN_APP.value: preference.in_app,
        }
        for preference in record.preferences
    }
    statement = insert(preferences).values(
        user_id=record.user_id, channels=channels, changed_at=record.changed_at
    )
    await uow.session.execute(
        statement.on_conflict_do_update(
            index_elements=[preferences.c.user_id],
            set_={
                "channels": statement.excluded.channels,
                "changed_at": statement.excluded.changed_at,
                "updated_at": func.now(),
            },
            where=statement.excluded.changed_at > preferences.c.changed_at,
        )
    )


async def on_user_deleted(record: records.UserDeleted, uow: UnitOfWork) -> None:
    """Forget the user's details and notifications; keep a tombstone so nothing revives them."""
    user_id = record.user_id
    statement = insert(contacts).values(user_id=user_id, deleted_at=record.deleted_at)
    await uow.session.execute(
        statement.on_conflict_do_update(
            index_elements=[contacts.c.user_id],
            set_={
                "email": None,
                "full_name": None,
                "deleted_at": func.coalesce(contacts.c.deleted_at, statement.excluded.deleted_at),
                "updated_at": func.now(),
            },
        )
    )
    await uow.session.execute(delete(notifications).where(notifications.c.user_id == user_id))


async def on_password_reset_requested(
    record: records.PasswordResetRequested,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    notifier: Notifier,
) -> None:
    """E-mail the reset link (at most once) to the address the event names, unless the token
    has expired meanwhile (a replayed dead letter) or the user is known to be deleted."""
    user_id = record.user_id
    if record.expires_at <= datetime.now(UTC):
        log.info("no password-reset e-mail of event %s: its token has expired", event.id)
        return
    contact = await _contact(uow.session, user_id)
    if contact is not None and contact.deleted:
        log.info("no password-reset e-mail of event %s: user %s was deleted", event.id, user_id)
        return
    token = _reset_token(record, event.id, notifier.reset_token_opener)
    name = printable_name(record.full_name)
    context = {
        "name": name or "there",
        "link": notifier.password_reset_url + token,
        "expires": f"{record.expires_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
    }
    message = notifier.renderer.render(Kind.PASSWORD_RESET, context)
    email = Email(
        to_email=record.email,
        to_name=name or None,
        subject=message.subject,
        text=message.text,
        html=message.html,
        custom_args={"event_id": event.id, "notification": Kind.PASSWORD_RESET.value},
    )
    await notifier.postman.deliver(Delivery(event.id, user_id, Kind.PASSWORD_RESET), email)


def _reset_token(
    record: records.PasswordResetRequested, event_id: str, opener: Opener | None
) -> str:
    """The token of a PasswordResetRequested: opened with `opener` when sealed, for the
    account and expiry the event names. A token that does not open, or that this service has
    no key for, is ResetTokenUnreadableError: never a link without its token, never a guess."""
    sealed = record.sealed_token
    if sealed is None:
        token = record.token
        if opener is not None and token:
            log.warning(
                "the reset token of event %s came in clear: the user service seals nothing "
                "(set CHOREO_NOTIFICATION_KEY there)",
                event_id,
            )
    elif opener is None:
        raise ResetTokenUnreadableError(
            f"the reset token of event {event_id} is sealed, but NOTIFICATION_SEALING_KEY is "
            "unset: set it to the private key of CHOREO_NOTIFICATION_KEY, then replay; no e-mail "
            "was sent"
        )
    else:
        context = password_reset_context(record.user_id, record.expires_at)
        try:
            token = opener.open(sealed, context).decode("ascii", errors="replace")
        except SealedValueError as error:
            raise ResetTokenUnreadableError(
                f"the reset token of event {event_id} cannot be opened: {error}; no e-mail was sent"
            ) from None
    if not _RESET_TOKEN.fullmatch(token):
        raise ResetTokenUnreadableError(
            f"event {event_id} carries no usable reset token: no e-mail was sent"
        )
    return token


async def _remember_contact(
    session: Session,
    user_id: str,
    *,
    email: str,
    full_name: str,
    details_at: datetime,
    role: str | None,
    phone: str | None,
) -> None:
    """Insert or update a contact; details older than those held, and deleted contacts, are
    left alone. `role` (known from UserRegistered only) is set when given."""
    statement = insert(contacts).values(
        user_id=user_id,
        email=email,
        full_name=full_name,
        role=role,
        phone=phone,
        details_at=details_at,
    )
    new = statement.excluded
    newer = or_(contacts.c.details_at.is_(None), new.details_at >= contacts.c.details_at)
    changes = {
        "email": case((newer, new.email), else_=contacts.c.email),
        "full_name": case((newer, new.full_name), else_=contacts.c.full_name),
        "phone": case((newer, new.phone), else_=contacts.c.phone),
        "details_at": func.greatest(contacts.c.details_at, new.details_at),
        "updated_at": func.now(),
    }
    if role is not None:
        changes["role"] = new.role
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[contacts.c.user_id],
            set_=changes,
            where=contacts.c.deleted_at.is_(None),
        )
    )


# order.create and order.event.


async def on_order_created(
    record: records.OrderCreated,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    notifier: Notifier,
) -> None:
    order_id, user_id = record.order_id, record.user_id
    item_count = sum(line.quantity for line in record.items)
    async with notifier.new_unit_of_work() as facts:
        await facts.session.execute(
            insert(orders)
            .values(
                order_id=uuid.UUID(order_id),
                user_id=user_id,
                total=record.total_amount,
                currency=record.currency,
                item_count=item_count,
            )
            .on_conflict_do_nothing()
        )
    if await _contradicts_cancellation(uow.session, order_id, Kind.ORDER_RECEIVED):
        return
    context = {
        **_order_context(order_id),
        "items": count_of(item_count, "item"),
        "total": format_money(record.total_amount, record.currency),
    }
    await _notify_user(uow, notifier, event, user_id, Kind.ORDER_RECEIVED, context)


async def on_order_confirmed(
    record: records.OrderConfirmed,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    notifier: Notifier,
) -> None:
    order_id = record.order_id
    if await _contradicts_cancellation(uow.session, order_id, Kind.ORDER_CONFIRMED):
        return
    context = {
        **_order_context(order_id),
        "total": format_money(record.total_amount, record.currency),
    }
    await _notify_user(uow, notifier, event, record.user_id, Kind.ORDER_CONFIRMED, context)


async def on_order_cancelled(
    record: records.OrderCancelled,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    notifier: Notifier,
) -> None:
    async with notifier.new_unit_of_work() as facts:
        await facts.session.execute(
            insert(order_cancellations)
            .values(
                order_id=uuid.UUID(record.order_id),
                reason=record.reason,
                cancelled_at=record.cancelled_at,
            )
            .on_conflict_do_nothing()
        )
    context = {
        **_order_context(record.order_id),
        "reason": cancel_reason_in_words(record.reason),
        "refund": record.charged,
    }
    await _notify_user(uow, notifier, event, record.user_id, Kind.ORDER_CANCELLED, context)


# payment.event: these name the order only; its customer comes from the order replica.


async def on_payment_failed(
    record: records.PaymentFailed,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    notifier: Notifier,
) -> None:
    user_id = await _customer_of(uow.session, record.order_id)
    context = {
        **_order_context(record.order_id),
        "amount": format_money(record.amount, record.currency),
        "reason": decline_reason_in_words(record.decline_code, record.message),
    }
    await _notify_user(uow, notifier, event, user_id, Kind.PAYMENT_FAILED, context)


async def on_payment_refunded(
    record: records.PaymentRefunded,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    notifier: Notifier,
) -> None:
    user_id = await _customer_of(uow.session, record.order_id)
    context = {
        **_order_context(record.order_id),
        "amount": format_money(record.amount, record.currency),
    }
    await _notify_user(uow, notifier, event, user_id, Kind.REFUND_ISSUED, context)


# stock.updated: to every admin.


async def on_low_stock_detected(
    record: records.LowStockDetected,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    notifier: Notifier,
) -> None:
    context = {
        "product": record.product_name,
        "product_id": record.product_id,
        "available": record.available,
        "threshold": record.threshold,
    }
    admins = await _admins(uow.session)
    if not admins:
        log.info("low stock of product %s: no admin to tell", record.product_id)
    for admin in admins:
        await _notify(uow, notifier, event, admin, Kind.LOW_STOCK, context)


# Commands (the API): each opens the unit of work it is given.


async def mark_read(uow: UnitOfWork, user_id: str, notification_id: uuid.UUID) -> None:
    """Mark one of the user's notifications read (the first time counts)."""
    async with uow:
        marked = await uow.session.execute(
            update(notifications)
            .where(notifications.c.id == notification_id, notifications.c.user_id == user_id)
            .values(read_at=func.coalesce(notifications.c.read_at, func.now()))
            .returning(notifications.c.id)
        )
        if marked.first() is None:
            raise NotificationNotFoundError(f"no notification {notification_id}")


# Recipients and notifying.


async def _notify_user(
    uow: UnitOfWork,
    notifier: Notifier,
    event: Event[records.Record],
    user_id: str,
    kind: Kind,
    context: Mapping[str, object],
) -> None:
    contact = await _contact(uow.session, user_id)
    if contact is None:
        raise NotKnownYetError(f"contact of user {user_id} not known yet")
    if not contact.reachable:
        log.info("no %s notification of event %s: user %s was deleted", kind, event.id, user_id)
        return
    await _notify(uow, notifier, event, contact, kind, context)


async def _notify(
    uow: UnitOfWork,
    notifier: Notifier,
    event: Event[records.Record],
    contact: Contact,
    kind: Kind,
    context: Mapping[str, object],
) -> None:
    """Notify `contact` on the channels chosen for this kind: the e-mail and the SMS each at
    most once, the in-app notification in the handler's transaction."""
    if contact.email is None:
        return
    context = {"name": contact.greeting_name, **context}
    message = notifier.renderer.render(kind, context)
    chosen = await _chosen_channels(uow.session, contact.user_id)
    sms_available = notifier.postman.sms_sender is not None
    plan = plan_channels(kind, chosen, phone=contact.phone, sms_available=sms_available)
    if Channel.EMAIL in plan.channels:
        email = Email(
            to_email=contact.email,
            to_name=contact.display_name,
            subject=message.subject,
            text=message.text,
            html=message.html,
            custom_args={"event_id": event.id, "notification": kind.value},
        )
        await notifier.postman.deliver(Delivery(event.id, contact.user_id, kind), email)
    sms_delivery = Delivery(event.id, contact.user_id, kind, Channel.SMS)
    if plan.sms_skipped is not None:
        await notifier.postman.skip(sms_delivery, plan.sms_skipped)
    number = sms_number(contact.phone)
    if Channel.SMS in plan.channels and number is not None:
        sms = Sms(to=number, body=notifier.renderer.render_sms(kind, context))
        await notifier.postman.deliver(sms_delivery, sms)
    if Channel.IN_APP in plan.channels:
        await uow.session.execute(
            insert(notifications)
            .values(
                user_id=contact.user_id,
                kind=kind.value,
                title=message.subject,
                body=message.text,
                event_id=event.id,
            )
            .on_conflict_do_nothing(constraint="notifications_once")
        )


async def _chosen_channels(session: Session, user_id: str) -> ChosenChannels:
    stored = await session.scalar(
        select(preferences.c.channels).where(preferences.c.user_id == user_id)
    )
    return chosen_channels(stored)


_CONTACT_COLUMNS = (
    contacts.c.user_id,
    contacts.c.email,
    contacts.c.full_name,
    contacts.c.role,
    contacts.c.deleted_at.is_not(None),
    contacts.c.phone,
)


async def _contact(session: Session, user_id: str) -> Contact | None:
    row = (
        await session.execute(select(*_CONTACT_COLUMNS).where(contacts.c.user_id == user_id))
    ).first()
    return None if row is None else Contact(*row)


async def _admins(session: Session) -> list[Contact]:
    rows = await session.execute(
        select(*_CONTACT_COLUMNS)
        .where(
            contacts.c.role == ADMIN_ROLE,
            contacts.c.deleted_at.is_(None),
            contacts.c.email.is_not(None),
        )
        .order_by(contacts.c.user_id)
    )
    return [Contact(*row) for row in rows]


async def _contradicts_cancellation(session: Session, order_id: str, kind: Kind) -> bool:
    """Whether `kind` is not to be sent because the order is known to be cancelled."""
    if kind not in CONTRADICTED_BY_CANCELLATION:
        return False
    reason = await session.scalar(
        select(order_cancellations.c.reason).where(
            order_cancellations.c.order_id == uuid.UUID(order_id)
        )
    )
    if reason is None:
        return False
    log.info("no %s notification of order %s: it was cancelled (%s) before", kind, order_id, reason)
    return True


async def _customer_of(session: Session, order_id: str) -> str:
    user_id = (
        await session.execute(
            select(orders.c.user_id).where(orders.c.order_id == uuid.UUID(order_id))
        )
    ).scalar_one_or_none()
    if user_id is None:
        raise NotKnownYetError(f"order {order_id} not known yet")
    return str(user_id)


def _order_context(order_id: str) -> dict[str, object]:
    return {"order": order_reference(order_id), "order_id": order_id}
