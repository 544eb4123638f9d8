"""The risk screening's storage: the counters, lists and customer facts its rules read, each
decision with its explanation, and the review of a decision to hold (docs/architecture.md,
"Risk screening").

A charge is screened once: the decision, and the attempt the velocity rules count, commit in a
transaction of their own before anything is charged, so a redelivered event finds the decision
and acts on it again instead of deciding twice (commit before act, as phase one of a charge).
A check that cannot run (its tables locked or slow past `timeout`, the database failing) holds
the order for review: its decision is stored as such, never approve or decline blind.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, literal, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError

from choreo import records
from choreo.db import UnitOfWork, UnitOfWorkFactory
from choreo.sql import Session
from payment_service.risk import (
    Assessment,
    Attempt,
    Counters,
    InvalidListEntryError,
    ListAction,
    ListEntry,
    ListKind,
    Reason,
    RiskDecision,
    RiskPolicy,
    assess,
    normalized,
    unavailable,
)
from payment_service.tables import (
    order_payments,
    risk_assessments,
    risk_attempts,
    risk_customers,
    risk_list_entries,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Screening:
    """What screening a charge needs: the policy, a transaction apart, and its limits."""

    policy: RiskPolicy
    new_unit_of_work: UnitOfWorkFactory
    timeout: timedelta
    """How long the check may take (PAYMENT_RISK_TIMEOUT_SECONDS) before the order is held."""
    review_expiry: timedelta
    """How long a review stays open (PAYMENT_RISK_REVIEW_EXPIRY_SECONDS)."""


@dataclass(frozen=True)
class Screened:
    """A stored decision."""

    decision: RiskDecision
    score: int
    reasons: tuple[Reason, ...]
    assessed_at: datetime


@dataclass(frozen=True)
class Charge:
    """The charge to screen, as the saga knows it."""

    order_id: uuid.UUID
    user_id: str
    amount: int
    currency: str
    client_ip: str | None
    card_fingerprint: str | None


async def stored_decision(session: Session, order_id: uuid.UUID) -> Screened | None:
    row = (
        await session.execute(
            select(risk_assessments).where(risk_assessments.c.order_id == order_id)
        )
    ).first()
    return None if row is None else _screened(row)


async def screen(session: Session, screening: Screening, charge: Charge, now: datetime) -> Screened:
    """The charge's decision: the stored one if it was screened before, else a new one,
    committed (with its attempt) before this returns.

    `session` is the handler's, holding the order's row lock: no other step of this order
    screens it meanwhile.
    """
    earlier = await stored_decision(session, charge.order_id)
    if earlier is not None:
        return earlier
    try:
        async with screening.new_unit_of_work() as risk:
            milliseconds = max(1, int(screening.timeout.total_seconds() * 1000))
            # statement_timeout covers waiting for locks too (PostgreSQL 16 manual, 20.11.2).
            await risk.session.execute(
                text("SELECT set_config('statement_timeout', :ms, true)").bindparams(
                    ms=str(milliseconds)
                )
            )
            assessment = await _assess(risk.session, screening.policy, charge, now)
            await risk.session.execute(
                insert(risk_attempts)
                .values(
                    order_id=charge.order_id,
                    user_id=charge.user_id,
                    card_fingerprint=charge.card_fingerprint,
                    client_ip=charge.client_ip,
                    amount=charge.amount,
                    declined=False,
                    attempted_at=now,
                )
                .on_conflict_do_nothing()
            )
            await _store(risk.session, charge, assessment, now)
    except (DBAPIError, OSError) as error:
        log.warning(
            "order %s: the risk check could not run (%s): held for review",
            charge.order_id,
            type(error).__name__,
        )
        async with screening.new_unit_of_work() as fallback:
            await _store(fallback.session, charge, unavailable(_why(error)), now)
    decided = await stored_decision(session, charge.order_id)
    assert decided is not None  # committed above (by this step, or a racing one)
    return decided


async def mark_declined(session: Session, order_id: uuid.UUID) -> None:
    """The screened charge was declined (by the provider or the screening): the card-testing
    rule counts it."""
    await session.execute(
        update(risk_attempts).where(risk_attempts.c.order_id == order_id).values(declined=True)
    )


async def open_review(
    session: Session, order_id: uuid.UUID, now: datetime, expiry: timedelta
) -> datetime:
    """Open the review of a held order (once); returns when it expires."""
    expires = now + expiry
    await session.execute(
        update(risk_assessments)
        .where(risk_assessments.c.order_id == order_id, risk_assessments.c.review_status.is_(None))
        .values(review_status="OPEN", review_opened_at=now, review_expires_at=expires)
    )
    row = (
        await session.execute(
            select(risk_assessments.c.review_expires_at).where(
                risk_assessments.c.order_id == order_id
            )
        )
    ).one()
    opened: datetime = row.review_expires_at
    return opened


async def remember_customer(
    session: Session,
    user_id: str,
    *,
    email: str | None = None,
    registered_at: datetime | None = None,
) -> None:
    """Keep what user.event says of a customer (the e-mail the lists match, the account's
    age); a value not given is left as it is."""
    values: dict[str, Any] = {}
    if email is not None:
        values["email"] = email
    if registered_at is not None:
        values["registered_at"] = registered_at
    statement = insert(risk_customers).values(user_id=user_id, **values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[risk_customers.c.user_id],
            set_={**{name: statement.excluded[name] for name in values}, "updated_at": func.now()},
        )
    )


async def _assess(
    session: Session, policy: RiskPolicy, charge: Charge, now: datetime
) -> Assessment:
    # Two screenings of one card or one address at a time would both count the other's
    # attempt as not there yet: each takes a lock on the values it counts, in one order.
    keys = [f"card:{charge.card_fingerprint}" if charge.card_fingerprint else None]
    keys.append(f"ip:{charge.client_ip}" if charge.client_ip else None)
    for key in keys:
        if key is not None:
            await session.execute(
                select(func.pg_advisory_xact_lock(func.hashtextextended(literal(key), 0)))
            )
    customer = (
        await session.execute(
            select(risk_customers.c.email, risk_customers.c.registered_at).where(
                risk_customers.c.user_id == charge.user_id
            )
        )
    ).first()
    counters = await _counters(session, policy, charge, now)
    entries = await _entries(session, charge, None if customer is None else customer.email)
    attempt = Attempt(
        customer_id=charge.user_id,
        email=None if customer is None else customer.email,
        address=charge.client_ip,
        card_fingerprint=charge.card_fingerprint,
        amount=charge.amount,
        account_created_at=None if customer is None else customer.registered_at,
        at=now,
    )
    return assess(attempt, counters, entries, policy)


async def _counters(
    session: Session, policy: RiskPolicy, charge: Charge, now: datetime
) -> Counters:
    """The rules' counters in one statement over the attempts of the widest window, and the
    customer's paid orders in another. Attempt counts include this one (not stored yet)."""
    attempts = risk_attempts.c
    card = attempts.card_fingerprint == charge.card_fingerprint
    address = attempts.client_ip == charge.client_ip
    customer = attempts.user_id == charge.user_id
    widest = max(policy.card_window, policy.address_window, policy.card_testing_window)
    testing_since = now - policy.card_testing_window

    def counted(condition: Any) -> Any:
        return func.count().filter(condition)

    row = (
        await session.execute(
            select(
                counted(and_(card, attempts.attempted_at > now - policy.card_window)).label("card"),
                counted(and_(address, attempts.attempted_at > now - policy.address_window)).label(
                    "address"
                ),
                counted(
                    and_(customer, attempts.declined, attempts.attempted_at > testing_since)
                ).label("customer_declines"),
                counted(
                    and_(address, attempts.declined, attempts.attempted_at > testing_since)
                ).label("address_declines"),
            ).where(
                attempts.attempted_at > now - widest,
                attempts.order_id != charge.order_id,
                or_(card, address, customer),
            )
        )
    ).one()
    paid = (
        await session.execute(
            select(
                func.count().label("orders"),
                func.percentile_disc(0.5).within_group(order_payments.c.amount).label("median"),
            ).where(
                order_payments.c.user_id == charge.user_id,
                order_payments.c.status == "SUCCEEDED",
                order_payments.c.currency == charge.currency,
                order_payments.c.order_id != charge.order_id,
            )
        )
    ).one()
    return Counters(
        card_attempts=row.card + 1 if charge.card_fingerprint else 0,
        address_attempts=row.address + 1 if charge.client_ip else 0,
        customer_declines=row.customer_declines,
        address_declines=row.address_declines if charge.client_ip else 0,
        paid_orders=paid.orders,
        median_paid_amount=None if paid.median is None else int(paid.median),
    )


async def _entries(session: Session, charge: Charge, email: str | None) -> list[ListEntry]:
    """The list entries that name this charge's card, e-mail, address or customer."""
    seen = {
        ListKind.CARD_FINGERPRINT: charge.card_fingerprint,
        ListKind.EMAIL: email,
        ListKind.IP: charge.client_ip,
        ListKind.CUSTOMER: charge.user_id,
    }
    pairs = []
    for kind, value in seen.items():
        if value is None:
            continue
        try:
            pairs.append(
                and_(
                    risk_list_entries.c.kind == kind.value,
                    risk_list_entries.c.value == normalized(kind, value),
                )
            )
        except InvalidListEntryError:
            continue  # nothing listed can match a value that is none of its kind
    if not pairs:
        return []
    rows = (
        await session.execute(
            select(
                risk_list_entries.c.kind, risk_list_entries.c.value, risk_list_entries.c.action
            ).where(or_(*pairs))
        )
    ).all()
    return [ListEntry(ListKind(row.kind), row.value, ListAction(row.action)) for row in rows]


async def _store(session: Session, charge: Charge, assessment: Assessment, now: datetime) -> None:
    counters = assessment.counters
    await session.execute(
        insert(risk_assessments)
        .values(
            order_id=charge.order_id,
            user_id=charge.user_id,
            decision=assessment.decision.value,
            score=assessment.score,
            reasons=[
                {"rule": reason.rule, "points": reason.points, "detail": reason.detail}
                for reason in assessment.reasons
            ],
            counters=None if counters is None else _counters_json(counters),
            assessed_at=now,
        )
        .on_conflict_do_nothing()
    )


def _counters_json(counters: Counters) -> dict[str, int | None]:
    return {
        "card_attempts": counters.card_attempts,
        "address_attempts": counters.address_attempts,
        "customer_declines": counters.customer_declines,
        "address_declines": counters.address_declines,
        "paid_orders": counters.paid_orders,
        "median_paid_amount": counters.median_paid_amount,
    }


def _screened(row: Any) -> Screened:
    return Screened(
        decision=RiskDecision(row.decision),
        score=row.score,
        reasons=tuple(
            Reason(reason["rule"], reason["points"], reason["detail"]) for reason in row.reasons
        ),
        assessed_at=row.assessed_at,
    )


def _why(error: BaseException) -> str:
    if isinstance(error, DBAPIError) and "statement timeout" in str(error.orig):
        return "the risk check timed out"
    return f"the risk store failed ({type(error).__name__})"


async def on_user_registered(record: records.UserRegistered, uow: UnitOfWork) -> None:
    await remember_customer(
        uow.session, record.user_id, email=record.email, registered_at=record.registered_at
    )


async def on_user_updated(record: records.UserUpdated, uow: UnitOfWork) -> None:
    await remember_customer(uow.session, record.user_id, email=record.email)
