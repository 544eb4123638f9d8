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

from sqlalchemy import TextClause, bindparam, func, select, text, update
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
    risk_assessments,
    risk_attempts,
    risk_customers,
)

log = logging.getLogger(__name__)

# The statements of every screening are built once, their values bound on each execution: built
# anew, a statement cost ~125 µs of client CPU per execution, built once ~60 µs (choreo.sql
# compiles each shape once; a saga runs ~20 statements). An INSERT's columns are the keys of the
# parameters it is executed with; its `.values()` holds only what every row gets.


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


_STORED_DECISION = select(risk_assessments).where(
    risk_assessments.c.order_id == bindparam("order_id")
)


async def stored_decision(session: Session, order_id: uuid.UUID) -> Screened | None:
    row = (await session.execute(_STORED_DECISION, {"order_id": order_id})).first()
    return None if row is None else _screened(row)


# The attempt the velocity rules count, once per order.
_RECORD_RISK_ATTEMPT = insert(risk_attempts).values(declined=False).on_conflict_do_nothing()


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
            assessment = await _assess(risk.session, screening, charge, now)
            await risk.session.execute(
                _RECORD_RISK_ATTEMPT,
                {
                    "order_id": charge.order_id,
                    "user_id": charge.user_id,
                    "card_fingerprint": charge.card_fingerprint,
                    "client_ip": charge.client_ip,
                    "amount": charge.amount,
                    "attempted_at": now,
                },
            )
            stored = await _store(risk.session, charge, assessment, now)
    except (DBAPIError, OSError) as error:
        log.warning(
            "order %s: the risk check could not run (%s): held for review",
            charge.order_id,
            type(error).__name__,
        )
        assessment = unavailable(_why(error))
        async with screening.new_unit_of_work() as fallback:
            stored = await _store(fallback.session, charge, assessment, now)
    if stored:
        return Screened(assessment.decision, assessment.score, assessment.reasons, now)
    decided = await stored_decision(session, charge.order_id)  # a racing step's, committed
    assert decided is not None
    return decided


_MARK_DECLINED = (
    update(risk_attempts)
    .where(risk_attempts.c.order_id == bindparam("order_key"))
    .values(declined=True)
)


async def mark_declined(session: Session, order_id: uuid.UUID) -> None:
    """The screened charge was declined (by the provider or the screening): the card-testing
    rule counts it."""
    await session.execute(_MARK_DECLINED, {"order_key": order_id})


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


def _timeout_and_locks(card: bool, address: bool) -> TextClause:
    locks = [
        f"pg_advisory_xact_lock(hashtextextended(:{name}, 0))"
        for name, wanted in (("card_key", card), ("ip_key", address))
        if wanted
    ]
    return text(", ".join(["SELECT set_config('statement_timeout', :ms, true)", *locks]))


# By (the charge has a card fingerprint, a client address): the locks it takes.
_TIMEOUT_AND_LOCKS = {
    (card, address): _timeout_and_locks(card, address)
    for card in (False, True)
    for address in (False, True)
}


async def _assess(
    session: Session, screening: Screening, charge: Charge, now: datetime
) -> Assessment:
    policy = screening.policy
    # Two screenings of one card or one address at a time would both count the other's
    # attempt as not there yet: each takes a lock on the values it counts, in one order.
    # statement_timeout bounds each later statement, lock waits included (PostgreSQL manual,
    # 19.11); the advisory locks here are held only by other screenings, themselves bounded.
    milliseconds = max(1, int(screening.timeout.total_seconds() * 1000))
    await session.execute(
        _TIMEOUT_AND_LOCKS[bool(charge.card_fingerprint), bool(charge.client_ip)],
        {
            "ms": str(milliseconds),
            "card_key": f"card:{charge.card_fingerprint}",
            "ip_key": f"ip:{charge.client_ip}",
        },
    )
    row = (
        await session.execute(
            _SIGNALS,
            {
                "order_id": charge.order_id,
                "user": charge.user_id,
                "card": charge.card_fingerprint,
                "ip": charge.client_ip,
                "currency": charge.currency,
                "card_since": now - policy.card_window,
                "address_since": now - policy.address_window,
                "testing_since": now - policy.card_testing_window,
                # prior attempts: the one being screened counts itself
                "card_counted": policy.card_attempts_counted - 1,
                "address_counted": policy.address_attempts_counted - 1,
                "declines_counted": policy.declines_counted,
                "history": policy.anomaly_history,
            },
        )
    ).one()
    counters = Counters(
        card_attempts=row.card + 1 if charge.card_fingerprint else 0,
        address_attempts=row.address + 1 if charge.client_ip else 0,
        customer_declines=row.customer_declines,
        address_declines=row.address_declines if charge.client_ip else 0,
        paid_orders=row.paid_orders,
        median_paid_amount=None if row.median is None else int(row.median),
    )
    entries = await _entries(session, charge, row.email)
    attempt = Attempt(
        customer_id=charge.user_id,
        email=row.email,
        address=charge.client_ip,
        card_fingerprint=charge.card_fingerprint,
        amount=charge.amount,
        account_created_at=row.registered_at,
        at=now,
    )
    return assess(attempt, counters, entries, policy)


# Every signal of the rules in one statement (plain SQL: building it with SQLAlchemy's
# expression language cost more CPU than PostgreSQL spent running it, bench/risk.py). Each
# count reads its own index and stops at the most its rule needs (RiskPolicy.*_counted), and
# the median reads the customer's latest paid orders only: a hot card or address (a shared
# NAT address, a card under attack) or a long-standing customer costs the screening no more
# than a new one. Declines are found through partial indexes on declined attempts.
_SIGNALS = text(
    """
    SELECT
        (SELECT count(*) FROM (
            SELECT 1 FROM risk_attempts
            WHERE card_fingerprint = :card AND attempted_at > :card_since
                AND order_id <> :order_id
            LIMIT :card_counted) a) AS card,
        (SELECT count(*) FROM (
            SELECT 1 FROM risk_attempts
            WHERE client_ip = :ip AND attempted_at > :address_since AND order_id <> :order_id
            LIMIT :address_counted) a) AS address,
        (SELECT count(*) FROM (
            SELECT 1 FROM risk_attempts
            WHERE user_id = :user AND declined AND attempted_at > :testing_since
                AND order_id <> :order_id
            LIMIT :declines_counted) a) AS customer_declines,
        (SELECT count(*) FROM (
            SELECT 1 FROM risk_attempts
            WHERE client_ip = :ip AND declined AND attempted_at > :testing_since
                AND order_id <> :order_id
            LIMIT :declines_counted) a) AS address_declines,
        p.paid_orders, p.median, c.email, c.registered_at
    FROM (
        SELECT count(*) AS paid_orders,
            percentile_disc(0.5) WITHIN GROUP (ORDER BY amount) AS median
        FROM (
            SELECT amount FROM order_payments
            WHERE user_id = :user AND status = 'SUCCEEDED' AND currency = :currency
                AND order_id <> :order_id
            ORDER BY created_at DESC
            LIMIT :history) latest
    ) p
    LEFT JOIN risk_customers c ON c.user_id = :user
    """
)

_ENTRIES = text(
    "SELECT kind, value, action FROM risk_list_entries"
    " WHERE (kind, value) IN (SELECT * FROM unnest(CAST(:kinds AS text[]),"
    " CAST(:values AS text[])))"
)


async def _entries(session: Session, charge: Charge, email: str | None) -> list[ListEntry]:
    """The list entries that name this charge's card, e-mail, address or customer."""
    seen = {
        ListKind.CARD_FINGERPRINT: charge.card_fingerprint,
        ListKind.EMAIL: email,
        ListKind.IP: charge.client_ip,
        ListKind.CUSTOMER: charge.user_id,
    }
    kinds, values = [], []
    for kind, value in seen.items():
        if value is None:
            continue
        try:
            values.append(normalized(kind, value))
        except InvalidListEntryError:
            continue  # nothing listed can match a value that is none of its kind
        kinds.append(kind.value)
    if not kinds:
        return []
    rows = (await session.execute(_ENTRIES, {"kinds": kinds, "values": values})).all()
    return [ListEntry(ListKind(row.kind), row.value, ListAction(row.action)) for row in rows]


_STORE_ASSESSMENT = (
    insert(risk_assessments).on_conflict_do_nothing().returning(risk_assessments.c.order_id)
)


async def _store(session: Session, charge: Charge, assessment: Assessment, now: datetime) -> bool:
    """Store the decision; False when the order had one already (a racing step's)."""
    counters = assessment.counters
    stored = await session.execute(
        _STORE_ASSESSMENT,
        {
            "order_id": charge.order_id,
            "user_id": charge.user_id,
            "decision": assessment.decision.value,
            "score": assessment.score,
            "reasons": [
                {"rule": reason.rule, "points": reason.points, "detail": reason.detail}
                for reason in assessment.reasons
            ],
            "counters": None if counters is None else _counters_json(counters),
            "assessed_at": now,
        },
    )
    return stored.first() is not None


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
