"""user.event: the contact replica (details, role, phone), the preferences replica, and the
password-reset e-mail.

The contact a UserRegistered carries is committed on its own, before that event's welcome is
sent, so that notifications waiting for it do not also wait for that e-mail (or its retries,
or its dead letter).

A password reset is e-mail only, to the address its event names: the body carries the reset
token, so no in-app notification keeps it, `deliveries` holds no body, and no log line names it.
The token arrives sealed to this service's key (choreo.sealing) and is opened only here, just
before the e-mail; one that does not open is dead-lettered, never mailed without its token.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

from sqlalchemy import case, delete, func, or_
from sqlalchemy.dialects.postgresql import insert

from choreo import records
from choreo.db import UnitOfWork
from choreo.events import Event
from choreo.sealing import Opener, SealedValueError, password_reset_context
from choreo.sql import Session
from notification_service.deliveries import Delivery
from notification_service.domain import (
    Channel,
    Kind,
    ResetTokenUnreadableError,
    printable_name,
)
from notification_service.handlers.notifying import Notifier, contact_of, notify_user
from notification_service.sendgrid_mailer import Email
from notification_service.tables import contacts, notifications, preferences

log = logging.getLogger(__name__)

# What the user service makes (secrets.token_urlsafe), and all a link may carry.
_RESET_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


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
    await notify_user(uow, notifier, event, record.user_id, Kind.WELCOME, {})


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
    contact = await contact_of(uow.session, user_id)
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
