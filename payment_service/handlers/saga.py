"""The saga's events: each locks its order's `order_payments` row, records the fact it carries
and settles the order (docs/saga.md): charge, resume a charge a crash interrupted, refund, give
up (too late to charge), or nothing."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert

from choreo import records
from choreo.db import UnitOfWork, UnitOfWorkFactory
from choreo.errors import PermanentError
from choreo.events import Event
from choreo.revocations import is_revoked
from choreo.sql import Row, Session
from payment_service.domain import (
    ACCOUNT_DELETED,
    ACCOUNT_DELETED_MESSAGE,
    NO_PAYMENT_METHOD,
    NO_PAYMENT_METHOD_MESSAGE,
    RISK_DECLINED,
    RISK_DECLINED_MESSAGE,
    Action,
    ChargeStatus,
    IntentState,
    PaymentFacts,
    ProviderError,
    ProviderUnavailableError,
    Resume,
    expiry_reason,
    resume,
    settle,
)
from payment_service.faults import Faults
from payment_service.handlers.screening import (
    Charge,
    Screened,
    Screening,
    mark_declined,
    open_review,
    screen,
    stored_decision,
)
from payment_service.risk import RiskDecision
from payment_service.stripe_client import Intent, StripeGateway
from payment_service.tables import (
    charge_attempts,
    customers,
    order_payments,
    payment_methods,
    risk_assessments,
)

log = logging.getLogger(__name__)

# The saga's statements are built once, their values bound on each execution: built anew, a
# statement cost ~125 µs of client CPU per execution, built once ~60 µs (choreo.sql compiles each
# shape once; a saga runs ~20 statements). An INSERT's columns are the keys of the parameters it
# is executed with.


@dataclass(frozen=True)
class Charging:
    """What charging and refunding need besides the handler's own unit of work."""

    gateway: StripeGateway
    # Commits an intent's id before the intent is confirmed (phase one of a charge).
    new_unit_of_work: UnitOfWorkFactory
    # No charge starts later than this before the order's deadline (PAYMENT_CHARGE_MARGIN_SECONDS).
    charge_margin: timedelta
    # The clock every decision about the deadline reads.
    now: Callable[[], datetime]
    # The risk screening every charge goes through first.
    screening: Screening
    faults: Faults = field(default_factory=Faults)

    def too_late(self, facts: PaymentFacts) -> bool:
        return facts.too_late(self.now(), self.charge_margin)

    def gave_up(self, facts: PaymentFacts) -> bool:
        return facts.gave_up(self.now(), self.charge_margin)


@dataclass(frozen=True)
class OrderTerms:
    """What OrderCreated said about the order's payment."""

    user_id: str
    amount: int
    currency: str
    payment_method_id: str | None  # the user's choice; None: their default method
    client_ip: str | None  # where the order was placed from, if known


@dataclass(frozen=True)
class OrderPayment:
    """One order's row as the handler holding its lock sees it."""

    order_id: uuid.UUID
    payment_id: uuid.UUID
    facts: PaymentFacts
    terms: OrderTerms | None
    provider_payment_id: str | None  # the recorded charge's intent
    attempt_payment_id: str | None  # the intent committed in phase one, if any

    def require_terms(self) -> OrderTerms:
        if self.terms is None:
            raise PermanentError(f"order {self.order_id} is settled without its terms")
        return self.terms


# The order's row, each statement below setting what it records. `order_key`: SQLAlchemy binds
# the SET columns under their own names.
_UPDATE_ORDER_ROW = update(order_payments).where(
    order_payments.c.order_id == bindparam("order_key")
)


def _recording(facts: Sequence[str], *, once: bool = False) -> Select[Any]:
    """One statement that records an event's `facts` (columns, set from the parameters of the
    same names) on the order's row (created if this is
    the order's first event) and returns the row as `load_order_payment` reads it.

    INSERT ... ON CONFLICT DO UPDATE locks the row it updates until commit, as the SELECT ...
    FOR UPDATE of `load_order_payment` does (PostgreSQL, "INSERT", ON CONFLICT clause), so the
    row it returns is the one the handler decides on: one statement where it took three (create
    the row if missing, update it, read it under lock; issue 14). With `once`, a row that has
    the facts already is left as it is and locked, and nothing is returned (a redelivered
    OrderCreated: the caller reads the row itself).
    """
    values: dict[str, Any] = {name: bindparam(name) for name in facts}
    upsert = insert(order_payments).values(order_id=bindparam("order_id"), **values)
    recorded = (
        upsert.on_conflict_do_update(
            index_elements=[order_payments.c.order_id],
            set_={**{name: upsert.excluded[name] for name in facts}, "updated_at": func.now()},
            where=order_payments.c.order_known.is_(False) if once else None,
        )
        .returning(*order_payments.c)
        .cte("recorded")
    )
    return select(
        recorded, charge_attempts.c.provider_payment_id.label("attempt_payment_id")
    ).outerjoin(charge_attempts, charge_attempts.c.order_id == recorded.c.order_id)


# Once: a redelivered OrderCreated changes nothing.
_RECORD_ORDER_TERMS = _recording(
    (
        "order_known",
        "user_id",
        "amount",
        "currency",
        "payment_method_id",
        "client_ip",
        "deadline",
    ),
    once=True,
)
_RECORD_STOCK_RESERVED = _recording(("stock_reserved",))
_RECORD_CANCELLED = _recording(("cancelled",))


async def on_order_created(
    record: records.OrderCreated,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    charging: Charging,
) -> None:
    order_id = uuid.UUID(record.order_id)
    row = (
        await uow.session.execute(
            _RECORD_ORDER_TERMS,
            {
                "order_id": order_id,
                "order_known": True,
                "user_id": record.user_id,
                "amount": record.total_amount,
                "currency": record.currency,
                "payment_method_id": record.payment_method_id,
                "client_ip": record.client_ip,
                "deadline": record.deadline,
            },
        )
    ).one_or_none()
    payment = _order_payment(row) if row is not None else None
    await settle_order(uow, order_id, charging, event.traceparent, payment)


async def on_stock_reserved(
    record: records.StockReserved,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    charging: Charging,
) -> None:
    order_id = uuid.UUID(record.order_id)
    payment = await _record_fact(uow.session, order_id, _RECORD_STOCK_RESERVED, "stock_reserved")
    await settle_order(uow, order_id, charging, event.traceparent, payment)


async def on_order_cancelled(
    record: records.OrderCancelled,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    charging: Charging,
) -> None:
    order_id = uuid.UUID(record.order_id)
    payment = await _record_fact(uow.session, order_id, _RECORD_CANCELLED, "cancelled")
    await settle_order(uow, order_id, charging, event.traceparent, payment)


async def _record_fact(
    session: Session, order_id: uuid.UUID, recording: Select[Any], fact: str
) -> OrderPayment:
    row = (await session.execute(recording, {"order_id": order_id, fact: True})).one()
    return _order_payment(row)


_RECORD_EXPIRED = _UPDATE_ORDER_ROW.values(
    status=ChargeStatus.EXPIRED.value,
    no_charge_reason=bindparam("no_charge_reason"),
    updated_at=func.now(),
)


async def settle_order(
    uow: UnitOfWork,
    order_id: uuid.UUID,
    charging: Charging,
    traceparent: str | None,
    payment: OrderPayment | None = None,
) -> None:
    """Do what the order's facts call for, step by step, until they call for nothing.

    `load_order_payment` locks the order's row, until the caller's unit of work ends; a caller
    that read the row under lock in this unit already passes it as `payment` (the first step
    decides on it, each later one reads the row again).
    """
    while True:
        if payment is None:
            payment = await load_order_payment(uow.session, order_id)
        now = charging.now()
        action = settle(payment.facts, now, charging.charge_margin)
        if action is Action.NOTHING:
            return
        log.info("order %s: %s (%s)", order_id, action.value, payment.facts.status.value)
        if action is Action.CHARGE:
            await _charge(uow, payment, charging, traceparent)
        elif action is Action.RESUME_CHARGE:
            await _resume_charge(uow, payment, charging, traceparent)
        elif action is Action.VOID:
            await void_hold(uow, payment, charging, "VOIDED", None)
        elif action is Action.EXPIRE:
            reason = expiry_reason(payment.facts, now, charging.charge_margin)
            log.warning("order %s: %s", order_id, reason)
            await uow.session.execute(
                _RECORD_EXPIRED, {"order_key": order_id, "no_charge_reason": reason}
            )
        else:
            await _refund(uow, payment, charging, traceparent)
        payment = None


_LOCK_ORDER_PAYMENT = (
    select(order_payments, charge_attempts.c.provider_payment_id.label("attempt_payment_id"))
    .outerjoin(charge_attempts, charge_attempts.c.order_id == order_payments.c.order_id)
    .where(order_payments.c.order_id == bindparam("order_id"))
    .with_for_update(of=order_payments)
)


async def load_order_payment(session: Session, order_id: uuid.UUID) -> OrderPayment:
    row = (await session.execute(_LOCK_ORDER_PAYMENT, {"order_id": order_id})).one()
    return _order_payment(row)


def _order_payment(row: Row) -> OrderPayment:
    """The order's row and its phase-one intent, as `_LOCK_ORDER_PAYMENT` and `_recording`
    read them."""
    status = ChargeStatus(row.status)
    if status is ChargeStatus.NONE and row.attempt_payment_id is not None:
        status = ChargeStatus.CHARGING
    terms = None
    if row.order_known:
        terms = OrderTerms(
            row.user_id, row.amount, row.currency, row.payment_method_id, row.client_ip
        )
    return OrderPayment(
        order_id=row.order_id,
        payment_id=row.payment_id,
        facts=PaymentFacts(
            order_known=row.order_known,
            stock_reserved=row.stock_reserved,
            cancelled=row.cancelled,
            status=status,
            deadline=row.deadline,
        ),
        terms=terms,
        provider_payment_id=row.provider_payment_id,
        attempt_payment_id=row.attempt_payment_id,
    )


# Phase one of a charge: the intent, committed before it is confirmed.
_RECORD_CHARGE_ATTEMPT = insert(charge_attempts)


async def _charge(
    uow: UnitOfWork, payment: OrderPayment, charging: Charging, traceparent: str | None
) -> None:
    """Charge in two phases, so that a crash at any point never leads to a second charge."""
    terms = payment.require_terms()
    if await is_revoked(uow.session, terms.user_id):
        await _record_failure(
            uow, payment, None, ACCOUNT_DELETED, ACCOUNT_DELETED_MESSAGE, traceparent
        )
        return
    method = await _method_to_charge(uow.session, terms)
    if method is None:
        await _record_failure(
            uow, payment, None, NO_PAYMENT_METHOD, NO_PAYMENT_METHOD_MESSAGE, traceparent
        )
        return
    customer_id, payment_method_id, fingerprint = method
    charge = Charge(
        order_id=payment.order_id,
        user_id=terms.user_id,
        amount=terms.amount,
        currency=terms.currency,
        client_ip=terms.client_ip,
        card_fingerprint=fingerprint,
    )
    screened = await screen(uow.session, charging.screening, charge, charging.now())
    if screened.decision is RiskDecision.DECLINE:
        await mark_declined(uow.session, payment.order_id)
        _publish_assessment(uow, payment, screened, None, traceparent)
        await _record_failure(uow, payment, None, RISK_DECLINED, RISK_DECLINED_MESSAGE, traceparent)
        return
    # Held for review: the card is only authorised, and captured if an admin approves.
    intent = await charging.gateway.create_intent(
        amount=terms.amount,
        currency=terms.currency,
        customer_id=customer_id,
        payment_method_id=payment_method_id,
        metadata={"order_id": str(payment.order_id), "payment_id": str(payment.payment_id)},
        manual_capture=screened.decision is RiskDecision.REVIEW,
    )
    await charging.faults.after_create()
    # Phase one: from this commit on, a redelivered event finds the order CHARGING and asks
    # the provider about this intent instead of creating another. Should the process die
    # before, the intent is an orphan: the redelivered event charges with a new one, and the
    # open-intent sweep (handlers/intents.py) cancels this one.
    async with charging.new_unit_of_work().autocommit() as phase_one:  # one INSERT
        await phase_one.session.execute(
            _RECORD_CHARGE_ATTEMPT,
            {
                "order_id": payment.order_id,
                "provider_payment_id": intent.id,
                "provider_payment_method_id": payment_method_id,
                "card_fingerprint": fingerprint,
            },
        )
    if charging.too_late(payment.facts):
        # The process was held up (paused, starved) since settle() said CHARGE: leave the
        # intent CHARGING, and the next step, resuming it, cancels it instead of confirming.
        return
    confirmed = await charging.gateway.confirm_intent(intent.id)
    await charging.faults.after_confirm()
    await _record_outcome(uow, payment, confirmed, traceparent, charging)


async def _resume_charge(
    uow: UnitOfWork, payment: OrderPayment, charging: Charging, traceparent: str | None
) -> None:
    """Bring an intent committed before a crash (or a failed confirm) to a recorded outcome."""
    intent_id = payment.attempt_payment_id
    if intent_id is None:
        raise PermanentError(f"order {payment.order_id} is CHARGING without an intent")
    intent = await charging.gateway.retrieve_intent(intent_id)
    step = resume(intent.state, gave_up=charging.gave_up(payment.facts))
    log.warning(
        "order %s: resuming charge %s, found %s: %s",
        payment.order_id,
        intent_id,
        intent.state.value,
        step.value,
    )
    if step is Resume.RECORD:
        await _record_outcome(uow, payment, intent, traceparent, charging)
    elif step is Resume.CONFIRM:
        confirmed = await charging.gateway.confirm_intent(intent_id)
        await charging.faults.after_confirm()
        await _record_outcome(uow, payment, confirmed, traceparent, charging)
    elif step is Resume.ABANDON:
        if intent.state in (IntentState.UNCONFIRMED, IntentState.REQUIRES_ACTION):
            await charging.gateway.cancel_intent(intent_id)
        await uow.session.execute(
            delete(charge_attempts).where(charge_attempts.c.order_id == payment.order_id)
        )
    else:
        raise ProviderUnavailableError(f"charge {intent_id} is still processing at the provider")


_RECORD_HELD = _UPDATE_ORDER_ROW.values(
    status=ChargeStatus.HELD.value,
    provider_payment_id=bindparam("provider_payment_id"),
    updated_at=func.now(),
)
_RECORD_SUCCEEDED = _UPDATE_ORDER_ROW.values(
    status=ChargeStatus.SUCCEEDED.value,
    provider_payment_id=bindparam("provider_payment_id"),
    charged_at=bindparam("charged_at"),
    updated_at=func.now(),
)


async def _record_outcome(
    uow: UnitOfWork,
    payment: OrderPayment,
    intent: Intent,
    traceparent: str | None,
    charging: Charging,
) -> None:
    """Record the outcome of the order's charge (or of its capture, from HELD). The first
    outcome of a screened charge publishes its RiskAssessed too, in the same transaction; a
    charge that waits for the customer (AWAITING_ACTION) publishes it with its outcome, once
    the customer authenticated: a review, if any, opens only then."""
    if intent.state is IntentState.REQUIRES_ACTION:
        if payment.facts.status is not ChargeStatus.AWAITING_ACTION:
            await _await_customer(uow, payment, intent, traceparent, charging)
        return
    screened = None
    if payment.facts.status is not ChargeStatus.HELD:
        screened = await stored_decision(uow.session, payment.order_id)
    if intent.state is IntentState.AUTHORISED:
        expires = await open_review(
            uow.session, payment.order_id, charging.now(), charging.screening.review_expiry
        )
        await uow.session.execute(
            _RECORD_HELD, {"order_key": payment.order_id, "provider_payment_id": intent.id}
        )
        if screened is not None:
            _publish_assessment(uow, payment, screened, expires, traceparent)
        return
    if screened is not None:
        _publish_assessment(uow, payment, screened, None, traceparent)
    if intent.state is IntentState.SUCCEEDED:
        terms = payment.require_terms()
        now = datetime.now(UTC)
        await uow.session.execute(
            _RECORD_SUCCEEDED,
            {"order_key": payment.order_id, "provider_payment_id": intent.id, "charged_at": now},
        )
        succeeded = records.PaymentSucceeded(
            order_id=str(payment.order_id),
            payment_id=str(payment.payment_id),
            amount=terms.amount,
            currency=terms.currency,
            provider_payment_id=intent.id,
            succeeded_at=now,
        )
        uow.publish(succeeded, traceparent=traceparent)
    elif intent.state in (IntentState.DECLINED, IntentState.CANCELED):
        if intent.state is IntentState.DECLINED:
            await mark_declined(uow.session, payment.order_id)
        code = intent.decline_code or "card_declined"
        message = intent.decline_message or "The payment was declined."
        await _record_failure(uow, payment, intent.id, code, message, traceparent)
    else:
        raise ProviderUnavailableError(f"the provider has not decided on charge {intent.id} yet")


_RECORD_AWAITING_ACTION = _UPDATE_ORDER_ROW.values(
    status=ChargeStatus.AWAITING_ACTION.value,
    provider_payment_id=bindparam("provider_payment_id"),
    updated_at=func.now(),
)


async def _await_customer(
    uow: UnitOfWork,
    payment: OrderPayment,
    intent: Intent,
    traceparent: str | None,
    charging: Charging,
) -> None:
    """The card asked for authentication (3-D Secure): the charge waits for the customer
    (AWAITING_ACTION), and PaymentActionRequired tells the order service what the customer's
    client needs. The outcome comes by webhook (`resolve_action`); the order's deadline, moved
    by the order service, cancels an abandoned one (VOID)."""
    if intent.action is None:
        raise PermanentError(f"charge {intent.id} requires an action the provider did not name")
    terms = payment.require_terms()
    await uow.session.execute(
        _RECORD_AWAITING_ACTION, {"order_key": payment.order_id, "provider_payment_id": intent.id}
    )
    uow.publish(
        records.PaymentActionRequired(
            order_id=str(payment.order_id),
            payment_id=str(payment.payment_id),
            amount=terms.amount,
            currency=terms.currency,
            provider_payment_id=intent.id,
            client_secret=intent.action.client_secret,
            next_action_type=intent.action.type,
            redirect_url=intent.action.redirect_url,
            required_at=charging.now(),
        ),
        traceparent=traceparent,
    )


async def resolve_action(
    uow: UnitOfWork, order_id: uuid.UUID, charging: Charging, traceparent: str | None = None
) -> bool:
    """Record the outcome of an order's charge that waited for the customer, now that the
    provider has one (a webhook said so, or the open-intent sweep saw it), then settle the order
    (a cancelled one is refunded). False when there is nothing to record: the order is not
    AWAITING_ACTION, or its intent still waits for the customer or is being processed.

    Locks the order's row until the caller's unit of work ends."""
    payment = await load_order_payment(uow.session, order_id)
    intent_id = payment.provider_payment_id
    if payment.facts.status is not ChargeStatus.AWAITING_ACTION or intent_id is None:
        return False
    intent = await charging.gateway.retrieve_intent(intent_id)
    if intent.state in (IntentState.REQUIRES_ACTION, IntentState.PROCESSING):
        return False
    log.info("order %s: the customer's action on %s ended %s", order_id, intent_id, intent.state)
    await _record_outcome(uow, payment, intent, traceparent, charging)
    await settle_order(uow, order_id, charging, traceparent)
    return True


def _publish_assessment(
    uow: UnitOfWork,
    payment: OrderPayment,
    screened: Screened,
    review_expires_at: datetime | None,
    traceparent: str | None,
) -> None:
    terms = payment.require_terms()
    uow.publish(
        records.RiskAssessed(
            order_id=str(payment.order_id),
            user_id=terms.user_id,
            decision=screened.decision.value,
            score=screened.score,
            reasons=tuple(
                records.RiskReason(rule=reason.rule, points=reason.points, detail=reason.detail)
                for reason in screened.reasons
            ),
            review_expires_at=review_expires_at,
            assessed_at=screened.assessed_at,
        ),
        traceparent=traceparent,
    )


async def capture_hold(
    uow: UnitOfWork, payment: OrderPayment, charging: Charging, traceparent: str | None
) -> None:
    """An admin approved the held order: capture its authorisation (once: `capture_intent`
    returns an intent captured before as it is) and record the outcome."""
    if payment.provider_payment_id is None:
        raise PermanentError(f"order {payment.order_id} is HELD without an intent")
    captured = await charging.gateway.capture_intent(payment.provider_payment_id)
    await _record_outcome(uow, payment, captured, traceparent, charging)


_RECORD_VOIDED = _UPDATE_ORDER_ROW.values(status=ChargeStatus.VOIDED.value, updated_at=func.now())


async def void_hold(
    uow: UnitOfWork,
    payment: OrderPayment,
    charging: Charging,
    status: str,
    failure: tuple[str, str] | None,
    traceparent: str | None = None,
) -> None:
    """Cancel a held authorisation, or a charge awaiting the customer (no money moved). With
    `failure` (code, message), the order fails with it (PaymentFailed: a rejected or expired
    review); without, it was cancelled already and nothing is published. `status` closes the
    review (REJECTED, EXPIRED, VOIDED).

    A customer may authenticate just before the cancellation reaches the service: the intent
    then succeeded, its charge is recorded (PaymentSucceeded) and the caller's next step
    refunds it, as for any charge that lands after its order was cancelled."""
    if payment.provider_payment_id is not None:
        intent = await _cancel_open_intent(charging, payment.provider_payment_id)
        if payment.facts.status is ChargeStatus.AWAITING_ACTION:
            if intent.state is IntentState.SUCCEEDED:
                await _record_outcome(uow, payment, intent, traceparent, charging)
                return
            screened = await stored_decision(uow.session, payment.order_id)
            if screened is not None:
                _publish_assessment(uow, payment, screened, None, traceparent)
    await close_review(uow.session, payment.order_id, status, charging.now())
    if failure is None:
        await uow.session.execute(_RECORD_VOIDED, {"order_key": payment.order_id})
        return
    code, message = failure
    await _record_failure(uow, payment, payment.provider_payment_id, code, message, traceparent)


_OPEN_STATES = frozenset(
    {
        IntentState.UNCONFIRMED,
        IntentState.REQUIRES_ACTION,
        IntentState.AUTHORISED,
        IntentState.DECLINED,
    }
)


async def _cancel_open_intent(charging: Charging, intent_id: str) -> Intent:
    """Cancel the intent if it is still open; where it stands afterwards. One the provider
    refuses to cancel (the customer's authentication won the race) is read again."""
    intent = await charging.gateway.retrieve_intent(intent_id)
    if intent.state is IntentState.PROCESSING:
        raise ProviderUnavailableError(f"charge {intent_id} is still processing at the provider")
    if intent.state not in _OPEN_STATES:
        return intent
    try:
        await charging.gateway.cancel_intent(intent_id)
    except ProviderError:
        intent = await charging.gateway.retrieve_intent(intent_id)
        if intent.state in _OPEN_STATES or intent.state is IntentState.PROCESSING:
            raise
        return intent
    return Intent(intent_id, IntentState.CANCELED)


async def close_review(
    session: Session,
    order_id: uuid.UUID,
    status: str,
    now: datetime,
    *,
    admin_id: str | None = None,
    note: str | None = None,
) -> None:
    await session.execute(
        update(risk_assessments)
        .where(risk_assessments.c.order_id == order_id, risk_assessments.c.review_status == "OPEN")
        .values(
            review_status=status,
            review_closed_at=now,
            review_closed_by=admin_id,
            review_note=note,
        )
    )


_RECORD_FAILED = _UPDATE_ORDER_ROW.values(
    status=ChargeStatus.FAILED.value,
    provider_payment_id=bindparam("provider_payment_id"),
    decline_code=bindparam("decline_code"),
    failure_message=bindparam("failure_message"),
    charged_at=bindparam("charged_at"),
    updated_at=func.now(),
)


async def _record_failure(
    uow: UnitOfWork,
    payment: OrderPayment,
    provider_payment_id: str | None,
    code: str,
    message: str,
    traceparent: str | None,
) -> None:
    terms = payment.require_terms()
    now = datetime.now(UTC)
    await uow.session.execute(
        _RECORD_FAILED,
        {
            "order_key": payment.order_id,
            "provider_payment_id": provider_payment_id,
            "decline_code": code,
            "failure_message": message,
            "charged_at": now,
        },
    )
    failed = records.PaymentFailed(
        order_id=str(payment.order_id),
        # No payment to name when no charge was attempted.
        payment_id=None if provider_payment_id is None else str(payment.payment_id),
        amount=terms.amount,
        currency=terms.currency,
        decline_code=code,
        message=message,
        failed_at=now,
    )
    uow.publish(failed, traceparent=traceparent)


_RECORD_REFUNDED = _UPDATE_ORDER_ROW.values(
    status=ChargeStatus.REFUNDED.value,
    refund_id=bindparam("refund_id"),
    provider_refund_id=bindparam("provider_refund_id"),
    refunded_amount=bindparam("refunded_amount"),
    refunded_at=bindparam("refunded_at"),
    updated_at=func.now(),
)


async def _refund(
    uow: UnitOfWork, payment: OrderPayment, charging: Charging, traceparent: str | None
) -> None:
    terms = payment.require_terms()
    if payment.provider_payment_id is None:
        raise PermanentError(f"order {payment.order_id} is SUCCEEDED without a charge")
    # One refund per payment, so its id can be derived: a retried refund keeps its id.
    refund_id = uuid.uuid5(payment.payment_id, "refund")
    refund = await charging.gateway.refund(
        payment.provider_payment_id,
        amount=terms.amount,
        metadata={
            "order_id": str(payment.order_id),
            "payment_id": str(payment.payment_id),
            "refund_id": str(refund_id),
        },
    )
    now = datetime.now(UTC)
    await uow.session.execute(
        _RECORD_REFUNDED,
        {
            "order_key": payment.order_id,
            "refund_id": refund_id,
            "provider_refund_id": refund.id,
            "refunded_amount": refund.amount,
            "refunded_at": now,
        },
    )
    refunded = records.PaymentRefunded(
        order_id=str(payment.order_id),
        payment_id=str(payment.payment_id),
        refund_id=str(refund_id),
        provider_refund_id=refund.id,
        amount=refund.amount,
        currency=terms.currency,
        refunded_at=now,
    )
    uow.publish(refunded, traceparent=traceparent)


# The user's cards with their provider customer; the two statements below pick one.
_USER_CARDS = (
    select(
        customers.c.provider_customer_id,
        payment_methods.c.provider_payment_method_id,
        payment_methods.c.fingerprint,
    )
    .join(customers, customers.c.user_id == payment_methods.c.user_id)
    .where(payment_methods.c.user_id == bindparam("user_id"))
)
_DEFAULT_CARD = _USER_CARDS.where(payment_methods.c.is_default)
_CHOSEN_CARD = _USER_CARDS.where(payment_methods.c.id == bindparam("payment_method_id"))


async def _method_to_charge(
    session: Session, terms: OrderTerms
) -> tuple[str, str, str | None] | None:
    """The provider's customer and payment method to charge for the order, and the card's
    fingerprint (None for a card saved before fingerprints were kept), if the user has it."""
    parameters: dict[str, Any] = {"user_id": terms.user_id}
    if terms.payment_method_id is None:
        query = _DEFAULT_CARD
    else:
        try:
            parameters["payment_method_id"] = uuid.UUID(terms.payment_method_id)
        except ValueError:
            return None
        query = _CHOSEN_CARD
    row = (await session.execute(query, parameters)).first()
    if row is None:
        return None
    return row.provider_customer_id, row.provider_payment_method_id, row.fingerprint
