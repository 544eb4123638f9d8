"""Notifying one recipient: the channels they chose for the kind (the `preferences` replica,
the defaults until a NotificationPreferencesChanged is seen; domain.plan_channels), the e-mail
and the SMS each at most once (deliveries.py), the in-app notification in the handler's
transaction; and the recipients, from the `contacts` replica. A deleted user gets nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Text, Uuid, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert

from choreo import records
from choreo.db import UnitOfWork, UnitOfWorkFactory
from choreo.events import Event
from choreo.sealing import Opener
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
    chosen_channels,
    plan_channels,
    sms_number,
)
from notification_service.messages import Renderer
from notification_service.sendgrid_mailer import Email
from notification_service.tables import contacts, notifications, order_cancellations, preferences
from notification_service.twilio_sender import Sms

log = logging.getLogger(__name__)

# The statements run for every notice are built once, with bind parameters, and executed with
# their values: a statement built anew per call costs ~125 µs of client CPU against ~60 µs
# (building it and its cache key; choreo.sql compiles each shape once either way). An INSERT's
# columns are the keys of the parameters it is executed with.


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


async def notify_user(
    uow: UnitOfWork,
    notifier: Notifier,
    event: Event[records.Record],
    user_id: str,
    kind: Kind,
    context: Mapping[str, object],
    *,
    order_id: str | None = None,
) -> None:
    """Notify user `user_id`, unless they were deleted. With `order_id`, a notice that a
    known cancellation of that order makes untrue (domain.CONTRADICTED_BY_CANCELLATION) is not
    sent. Raises NotKnownYetError while the user's contact has not arrived."""
    cancellable = order_id if kind in CONTRADICTED_BY_CANCELLATION else None
    recipient = await recipient_of(uow.session, user_id, cancellable)
    if recipient.cancelled is not None:
        log.info(
            "no %s notification of order %s: it was cancelled (%s) before",
            kind,
            order_id,
            recipient.cancelled,
        )
        return
    contact = recipient.contact
    if contact is None:
        raise NotKnownYetError(f"contact of user {user_id} not known yet")
    if not contact.reachable:
        log.info("no %s notification of event %s: user %s was deleted", kind, event.id, user_id)
        return
    await notify(uow, notifier, event, contact, kind, context, chosen=recipient.chosen)


@dataclass(frozen=True)
class Recipient:
    """What notifying one user reads: their contact (None: not known yet), the channels they
    chose, and, when an order was named, its cancellation reason if one is known."""

    contact: Contact | None
    chosen: ChosenChannels
    cancelled: str | None


async def notify(
    uow: UnitOfWork,
    notifier: Notifier,
    event: Event[records.Record],
    contact: Contact,
    kind: Kind,
    context: Mapping[str, object],
    *,
    chosen: ChosenChannels | None = None,
) -> None:
    """Notify `contact` on the channels chosen for this kind (`chosen`, read when not given):
    the e-mail and the SMS each at most once, the in-app notification in the handler's
    transaction."""
    if contact.email is None:
        return
    context = {"name": contact.greeting_name, **context}
    message = notifier.renderer.render(kind, context)
    if chosen is None:
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
            _ADD_NOTIFICATION,
            {
                "user_id": contact.user_id,
                "kind": kind.value,
                "title": message.subject,
                "body": message.text,
                "event_id": event.id,
            },
        )


_ADD_NOTIFICATION = insert(notifications).on_conflict_do_nothing(constraint="notifications_once")
_CHOSEN_CHANNELS = select(preferences.c.channels).where(
    preferences.c.user_id == bindparam("user_id")
)


async def _chosen_channels(session: Session, user_id: str) -> ChosenChannels:
    stored = await session.scalar(_CHOSEN_CHANNELS, {"user_id": user_id})
    return chosen_channels(stored)


CONTACT_COLUMNS = (
    contacts.c.user_id,
    contacts.c.email,
    contacts.c.full_name,
    contacts.c.role,
    contacts.c.deleted_at.is_not(None),
    contacts.c.phone,
)


_CONTACT = select(*CONTACT_COLUMNS).where(contacts.c.user_id == bindparam("user_id"))


async def contact_of(session: Session, user_id: str) -> Contact | None:
    row = (await session.execute(_CONTACT, {"user_id": user_id})).first()
    return None if row is None else Contact(*row)


# One statement where three ran (the contact, the preferences, the order's cancellation): each
# order notice reads all three (issue 14). `wanted` is the one row the left joins hang on, so a
# user or order not known yet still gives one row.
_WANTED = select(
    bindparam("user_id", type_=Text).label("user_id"),
    bindparam("order_id", type_=Uuid).label("order_id"),
).subquery("wanted")
_RECIPIENT = select(
    *CONTACT_COLUMNS, preferences.c.channels, order_cancellations.c.reason
).select_from(
    _WANTED.outerjoin(contacts, contacts.c.user_id == _WANTED.c.user_id)
    .outerjoin(preferences, preferences.c.user_id == _WANTED.c.user_id)
    .outerjoin(order_cancellations, order_cancellations.c.order_id == _WANTED.c.order_id)
)


async def recipient_of(session: Session, user_id: str, order_id: str | None = None) -> Recipient:
    row = (
        await session.execute(
            _RECIPIENT,
            {"user_id": user_id, "order_id": uuid.UUID(order_id) if order_id else None},
        )
    ).one()
    *contact, channels, reason = row
    return Recipient(
        contact=Contact(*contact) if contact[0] is not None else None,
        chosen=chosen_channels(channels),
        cancelled=reason,
    )


_ADMINS = (
    select(*CONTACT_COLUMNS)
    .where(
        contacts.c.role == ADMIN_ROLE,
        contacts.c.deleted_at.is_(None),
        contacts.c.email.is_not(None),
    )
    .order_by(contacts.c.user_id)
)


async def admins_of(session: Session) -> list[Contact]:
    rows = await session.execute(_ADMINS)
    return [Contact(*row) for row in rows]


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
