"""E-mail delivery: at most one e-mail per (event, recipient, kind), whatever is redelivered.

SendGrid's mail send has no idempotency key: a message sent twice arrives twice. So each
e-mail is first *claimed* — a `deliveries` row with status `claimed`, committed in a
transaction of its own — and only then sent. What the row says afterwards decides what a
redelivery of the event (a retry, a duplicate record, a dead letter replayed) does:

- `sent`: SendGrid accepted it (2xx). Skipped.
- `failed`: SendGrid answered that it did not take it (429, 5xx, any other 4xx) or could not
  be reached at all. Nothing went out, so it is claimed again and sent again.
- `claimed`: the send started and no outcome was recorded — the process died while sending,
  or the request went out and no answer came within `NOTIFICATION_SEND_TIMEOUT_SECONDS`.
  SendGrid may or may not have it. It is *not* sent again; a WARNING names it.

The trade-off is at most once over at least once: a crash or a timeout in the middle of a
send can lose that one e-mail (the in-app notification is still written), but no customer
ever gets the same e-mail twice. The window is one HTTP call, and a delivery left `claimed`
is visible in the table (status, claimed_at, last_error) for an operator to resend by hand.

The claim, and the outcome after the send, commit through their own unit of work (not the
handler's): a claim must be durable before SendGrid is called, and a failure must be on
record even though the handler's transaction then rolls back. Recording `sent` at once, too,
keeps a notification to several recipients (low stock, to every admin) exact when one of
them fails: those already sent are known to be sent when the handler is retried.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.dialects.postgresql import insert

from choreo.db import UnitOfWorkFactory
from notification_service.domain import (
    DeliveryStatus,
    EmailRefusedError,
    EmailUnavailableError,
    Kind,
    Outcome,
    Step,
    next_step,
    status_after,
)
from notification_service.sendgrid_mailer import Email, SendGridMailer
from notification_service.tables import deliveries

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One e-mail of one event to one recipient (a contact's user id)."""

    event_id: str
    recipient: str
    kind: Kind

    def __str__(self) -> str:
        return f"{self.kind} e-mail of event {self.event_id} to user {self.recipient}"


@dataclass(frozen=True)
class Postman:
    """Sends e-mails at most once each; see the module's docstring."""

    mailer: SendGridMailer
    # Commits claims and outcomes, apart from the handler's transaction.
    new_unit_of_work: UnitOfWorkFactory

    async def deliver(self, delivery: Delivery, email: Email) -> None:
        """Send `email` unless this delivery was sent or may have been; raise
        EmailUnavailableError (retriable) or EmailRefusedError when SendGrid did not take it."""
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
        result = await self.mailer.send(email)
        status = status_after(result.outcome)
        await self._record(delivery, status, result.detail, result.message_id)
        if result.outcome is Outcome.ACCEPTED:
            log.info("%s sent (%s)", delivery, result.detail)
        elif result.outcome is Outcome.NO_ANSWER:
            log.warning(
                "%s: %s; it may have been sent, so it is not sent again", delivery, result.detail
            )
        elif result.outcome is Outcome.REFUSED_FOR_NOW:
            raise EmailUnavailableError(f"{delivery} not sent: {result.detail}")
        else:
            raise EmailRefusedError(f"{delivery} refused: {result.detail}")

    async def _claim(self, delivery: Delivery) -> Step:
        async with self.new_unit_of_work() as uow:
            session = uow.session
            claimed = await session.execute(
                insert(deliveries)
                .values(
                    event_id=delivery.event_id,
                    recipient=delivery.recipient,
                    kind=delivery.kind.value,
                    status=DeliveryStatus.CLAIMED.value,
                )
                .on_conflict_do_nothing(constraint="deliveries_once")
                .returning(deliveries.c.id)
            )
            if claimed.first() is not None:
                return next_step(None)
            status = (
                await session.execute(
                    select(deliveries.c.status).where(*_is(delivery)).with_for_update()
                )
            ).scalar_one()
            step = next_step(DeliveryStatus(status))
            if step is Step.SEND_AGAIN:
                await session.execute(
                    update(deliveries)
                    .where(*_is(delivery))
                    .values(
                        status=DeliveryStatus.CLAIMED.value,
                        attempts=deliveries.c.attempts + 1,
                        claimed_at=func.now(),
                        updated_at=func.now(),
                    )
                )
            return step

    async def _record(
        self, delivery: Delivery, status: DeliveryStatus, detail: str, message_id: str | None
    ) -> None:
        async with self.new_unit_of_work() as uow:
            await uow.session.execute(
                update(deliveries)
                .where(*_is(delivery))
                .values(
                    status=status.value,
                    last_error=None if status is DeliveryStatus.SENT else detail,
                    provider_message_id=message_id,
                    sent_at=func.now() if status is DeliveryStatus.SENT else None,
                    updated_at=func.now(),
                )
            )


def _is(delivery: Delivery) -> tuple[ColumnElement[bool], ...]:
    return (
        deliveries.c.event_id == delivery.event_id,
        deliveries.c.recipient == delivery.recipient,
        deliveries.c.kind == delivery.kind.value,
    )
