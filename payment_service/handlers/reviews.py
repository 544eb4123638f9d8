"""The review queue: an admin approves a held order (its authorisation captured, the saga goes
on to CONFIRMED) or rejects it (the authorisation cancelled, PaymentFailed: the order is
cancelled, its stock released, the customer told); a review left open past its expiry is
rejected by the review sweep. Each works under the order's row lock, so a review is decided
once: approving twice captures once.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select

from choreo.db import UnitOfWork, UnitOfWorkFactory
from payment_service.domain import (
    REVIEW_EXPIRED,
    REVIEW_EXPIRED_MESSAGE,
    REVIEW_REJECTED,
    REVIEW_REJECTED_MESSAGE,
    ChargeStatus,
    PaymentError,
)
from payment_service.handlers.saga import (
    Charging,
    capture_hold,
    close_review,
    load_order_payment,
    void_hold,
)
from payment_service.tables import order_payments, risk_assessments

log = logging.getLogger(__name__)


class ReviewNotFoundError(PaymentError):
    """No order with that id was held for review."""


class ReviewClosedError(PaymentError):
    """The review was decided otherwise already (approving a rejected one, say)."""


class Verdict(StrEnum):
    APPROVE = "APPROVE"
    REJECT = "REJECT"


@dataclass(frozen=True)
class Reviewed:
    """The review after the command: its status, and whether this command decided it."""

    status: str
    decided_now: bool


_CLOSED_BY = {Verdict.APPROVE: "APPROVED", Verdict.REJECT: "REJECTED"}


async def decide_review(
    uow: UnitOfWork,
    charging: Charging,
    order_id: uuid.UUID,
    verdict: Verdict,
    *,
    admin_id: str,
    note: str | None,
    traceparent: str | None = None,
) -> Reviewed:
    """Approve or reject the review of `order_id`. The same verdict again changes nothing
    (decided_now False). Raises ReviewNotFoundError, or ReviewClosedError when the review was
    closed another way (the other verdict, its expiry, the order cancelled)."""
    wanted = _CLOSED_BY[verdict]
    async with uow:
        review = await _review(uow, order_id, lock=True)
        if review is None:
            raise ReviewNotFoundError(f"order {order_id} was not held for review")
        if review != "OPEN":
            if review == wanted:
                return Reviewed(review, decided_now=False)
            raise ReviewClosedError(f"the review of order {order_id} is {review} already")
        payment = await load_order_payment(uow.session, order_id)
        if payment.facts.status is not ChargeStatus.HELD:
            raise ReviewClosedError(
                f"order {order_id}'s payment is {payment.facts.status.value}, not held"
            )
        await close_review(
            uow.session, order_id, wanted, charging.now(), admin_id=admin_id, note=note
        )
        if verdict is Verdict.APPROVE:
            await capture_hold(uow, payment, charging, traceparent)
        else:
            failure = (REVIEW_REJECTED, REVIEW_REJECTED_MESSAGE)
            await void_hold(uow, payment, charging, wanted, failure, traceparent)
    log.info("order %s: review %s by %s", order_id, wanted.lower(), admin_id)
    return Reviewed(wanted, decided_now=True)


async def expire_reviews(
    uow_factory: UnitOfWorkFactory, charging: Charging, *, batch: int = 100
) -> int:
    """Reject the open reviews past their expiry (up to `batch`), each in its own unit of
    work, skipping orders another step holds; returns how many were rejected."""
    now = charging.now()
    async with uow_factory() as uow:
        due = (
            await uow.session.execute(
                select(risk_assessments.c.order_id)
                .where(
                    risk_assessments.c.review_status == "OPEN",
                    risk_assessments.c.review_expires_at <= now,
                )
                .order_by(risk_assessments.c.review_expires_at)
                .limit(batch)
            )
        ).all()
    expired = 0
    for (order_id,) in due:
        try:
            async with uow_factory() as uow:
                locked = await uow.session.execute(
                    select(order_payments.c.order_id)
                    .where(order_payments.c.order_id == order_id)
                    .with_for_update(skip_locked=True)
                )
                if locked.first() is None or await _review(uow, order_id) != "OPEN":
                    continue
                payment = await load_order_payment(uow.session, order_id)
                if payment.facts.status is not ChargeStatus.HELD:
                    continue
                await void_hold(
                    uow, payment, charging, "EXPIRED", (REVIEW_EXPIRED, REVIEW_EXPIRED_MESSAGE)
                )
                expired += 1
        except Exception:
            log.exception("order %s: its expired review was not rejected", order_id)
    if expired:
        log.info("rejected %d review(s) past their expiry", expired)
    return expired


async def _review(uow: UnitOfWork, order_id: uuid.UUID, *, lock: bool = False) -> str | None:
    """The review's status; None when the order was never held. With `lock`, the order's
    payment row is locked first (every step of the order takes that lock)."""
    if lock:
        held = await uow.session.execute(
            select(order_payments.c.order_id)
            .where(order_payments.c.order_id == order_id)
            .with_for_update()
        )
        if held.first() is None:
            return None
    row = (
        await uow.session.execute(
            select(risk_assessments.c.review_status).where(risk_assessments.c.order_id == order_id)
        )
    ).first()
    return None if row is None else row.review_status
