"""Delivery of e-mails and SMS: at most one message per (event, recipient, kind, channel),
whatever is redelivered. The channel is part of a delivery's identity, so the e-mail and the
SMS of one event are each sent once, and each fails, is dead-lettered and replayed on its own.

Neither SendGrid's mail send nor Twilio's Messages API has an idempotency key: a message sent
twice arrives twice. So each message is first *claimed* — a `deliveries` row with status
`claimed`, committed in a transaction of its own — and only then sent. What the row says
afterwards decides what a redelivery of the event (a retry, a duplicate record, a dead letter
replayed) does:

- `sent`: the provider accepted it (2xx). Skipped.
- `failed`: the provider answered that it did not take it (429, 5xx, any other 4xx) or could
  not be reached at all. Nothing went out, so it is claimed again and sent again.
- `claimed`: the send started and no outcome was recorded — the process died while sending,
  or the request went out and no answer came within `NOTIFICATION_SEND_TIMEOUT_SECONDS`.
  The provider may or may not have it. It is *not* sent again; a WARNING names it.
- `skipped`: never sent on purpose (an SMS chosen by a user with no valid phone number);
  `last_error` says why. A redelivery tries it again (the number may have been given since).

The trade-off is at most once over at least once: a crash or a timeout in the middle of a
send can lose that one e-mail (the in-app notification is still written), but no customer
ever gets the same e-mail twice. The window is one HTTP call, and a delivery left `claimed`
is visible in the table (status, claimed_at, last_error) for an operator to resend by hand.

The claim, and the outcome after the send, commit through their own unit of work (not the
handler's): a claim must be durable before SendGrid is called, and a failure must be on
record even though the handler's transaction then rolls back. Each is one statement,
committed by itself (autocommit: no BEGIN and COMMIT round trips); a delivery found claimed
before is read and changed in a transaction, under its row lock. Recording `sent` at once, too,
keeps a notification to several recipients (low stock, to every admin) exact when one of
them fails: those already sent are known to be sent when the handler is retried.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import BindParameter, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert

from choreo.db import UnitOfWorkFactory
from notification_service.domain import (
    Channel,
    DeliveryStatus,
    EmailRefusedError,
    EmailUnavailableError,
    Kind,
    Outcome,
    SendResult,
    SmsRefusedError,
    SmsUnavailableError,
    Step,
    next_step,
    status_after,
)
from notification_service.sendgrid_mailer import Email, SendGridMailer
from notification_service.tables import deliveries
from notification_service.twilio_sender import Sms, TwilioSender

log = logging.getLogger(__name__)

# The statements run for every message are built once, with bind parameters, and executed with
# their values: a statement built anew per call costs ~125 µs of client CPU against ~60 µs
# (building it and its cache key; choreo.sql compiles each shape once either way).


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message of one event to one recipient (a contact's user id) on one channel."""

    event_id: str
    recipient: str
    kind: Kind
    channel: Channel = Channel.EMAIL

    def __str__(self) -> str:
        what = "e-mail" if self.channel is Channel.EMAIL else self.channel.value.upper()
        return f"{self.kind} {what} of event {self.event_id} to user {self.recipient}"


def _key_of(delivery: Delivery) -> dict[str, str]:
    """The values of `_IS_DELIVERY`'s parameters for `delivery`."""
    return {
        "delivery_event": delivery.event_id,
        "delivery_recipient": delivery.recipient,
        "delivery_kind": delivery.kind.value,
        "delivery_channel": delivery.channel.value,
    }


# A delivery's identity (`_key_of`): its row, or the values that name it in a new one.
_EVENT_ID: BindParameter[str] = bindparam("delivery_event")
_RECIPIENT: BindParameter[str] = bindparam("delivery_recipient")
_KIND: BindParameter[str] = bindparam("delivery_kind")
_CHANNEL: BindParameter[str] = bindparam("delivery_channel")
_IS_DELIVERY = (
    deliveries.c.event_id == _EVENT_ID,
    deliveries.c.recipient == _RECIPIENT,
    deliveries.c.kind == _KIND,
    deliveries.c.channel == _CHANNEL,
)

_SKIP = (
    insert(deliveries)
    .values(
        event_id=_EVENT_ID,
        recipient=_RECIPIENT,
        kind=_KIND,
        channel=_CHANNEL,
        status=DeliveryStatus.SKIPPED.value,
        last_error=bindparam("reason"),
    )
    .on_conflict_do_update(
        constraint="deliveries_once",
        set_={"last_error": bindparam("reason"), "updated_at": func.now()},
        where=deliveries.c.status == DeliveryStatus.SKIPPED.value,
    )
)
_CLAIM = (
    insert(deliveries)
    .values(
        event_id=_EVENT_ID,
        recipient=_RECIPIENT,
        kind=_KIND,
        channel=_CHANNEL,
        status=DeliveryStatus.CLAIMED.value,
    )
    .on_conflict_do_nothing(constraint="deliveries_once")
    .returning(deliveries.c.id)
)
_LOCK_DELIVERY = select(deliveries.c.status).where(*_IS_DELIVERY).with_for_update()
_CLAIM_AGAIN = (
    update(deliveries)
    .where(*_IS_DELIVERY)
    .values(
        status=DeliveryStatus.CLAIMED.value,
        attempts=deliveries.c.attempts + 1,
        claimed_at=func.now(),
        updated_at=func.now(),
    )
)
_RECORD_SENT = (
    update(deliveries)
    .where(*_IS_DELIVERY)
    .values(
        status=DeliveryStatus.SENT.value,
        last_error=None,
        provider_message_id=bindparam("provider_message_id"),
        sent_at=func.now(),
        updated_at=func.now(),
    )
)
_RECORD_NOT_SENT = (
    update(deliveries)
    .where(*_IS_DELIVERY)
    .values(
        status=bindparam("status"),
        last_error=bindparam("last_error"),
        provider_message_id=bindparam("provider_message_id"),
        sent_at=None,
        updated_at=func.now(),
    )
)


@dataclass(frozen=True)
class Postman:
    """Sends e-mails and SMS at most once each; see the module's docstring."""

    mailer: SendGridMailer
    # Commits claims and outcomes, apart from the handler's transaction.
    new_unit_of_work: UnitOfWorkFactory
    sms_sender: TwilioSender | None = None

    async def deliver(self, delivery: Delivery, message: Email | Sms) -> None:
        """Send `message` unless this delivery was sent or may have been; raise
        EmailUnavailableError / SmsUnavailableError (retriable) or EmailRefusedError /
        SmsRefusedError when the provider did not take it."""
        step = await self._claim(delivery)
        if step is Step.SKIP_SENT:
            log.info("%s was sent before; not sending it again", delivery)
            return
        if step is Step.SKIP_UNKNOWN:
            log.warning(
                "%s was claimed before and its outcome is unknown (a crash or a timeout while "
                "sending): it may have been sent, so it is not sent again",
                delivery,
            )
            return
        result = await self._send(message)
        status = status_after(result.outcome)
        await self._record(delivery, status, result.detail, result.message_id)
        if result.outcome is Outcome.ACCEPTED:
            log.info("%s sent (%s)", delivery, result.detail)
        elif result.outcome is Outcome.NO_ANSWER:
            log.warning(
                "%s: %s; it may have been sent, so it is not sent again", delivery, result.detail
            )
        elif result.outcome is Outcome.REFUSED_FOR_NOW:
            unavailable = SmsUnavailableError if isinstance(message, Sms) else EmailUnavailableError
            raise unavailable(f"{delivery} not sent: {result.detail}")
        else:
            refused = SmsRefusedError if isinstance(message, Sms) else EmailRefusedError
            raise refused(f"{delivery} refused: {result.detail}")

    async def skip(self, delivery: Delivery, reason: str) -> None:
        """Record that `delivery` is not sent, on purpose, and why (unless it was sent, or may
        have been, already)."""
        log.info("%s skipped: %s", delivery, reason)
        async with self.new_unit_of_work().autocommit() as uow:
            await uow.session.execute(_SKIP, {**_key_of(delivery), "reason": reason})

    async def _send(self, message: Email | Sms) -> SendResult:
        if isinstance(message, Email):
            return await self.mailer.send(message)
        if self.sms_sender is None:
            return SendResult(Outcome.REFUSED, "no SMS sender configured")
        return await self.sms_sender.send(message)

    async def _claim(self, delivery: Delivery) -> Step:
        # The first claim of a delivery, by far the usual case, is one INSERT: committed alone.
        key = _key_of(delivery)
        async with self.new_unit_of_work().autocommit() as uow:
            claimed = await uow.session.execute(_CLAIM, key)
            if claimed.first() is not None:
                return next_step(None)
        # Claimed before: what it says now decides, read and changed under its row lock.
        async with self.new_unit_of_work() as uow:
            session = uow.session
            status = (await session.execute(_LOCK_DELIVERY, key)).scalar_one()
            step = next_step(DeliveryStatus(status))
            if step is Step.SEND_AGAIN:
                await session.execute(_CLAIM_AGAIN, key)
            return step

    async def _record(
        self, delivery: Delivery, status: DeliveryStatus, detail: str, message_id: str | None
    ) -> None:
        key = _key_of(delivery)
        async with self.new_unit_of_work().autocommit() as uow:
            if status is DeliveryStatus.SENT:
                await uow.session.execute(_RECORD_SENT, {**key, "provider_message_id": message_id})
            else:
                await uow.session.execute(
                    _RECORD_NOT_SENT,
                    {
                        **key,
                        "status": status.value,
                        "last_error": detail,
                        "provider_message_id": message_id,
                    },
                )
