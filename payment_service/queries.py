"""Read side of the payment service: a user's saved cards and the payments of orders, as the API
shows them (an admin also sees whose payment it is), the risk lists, and the screening's
decisions and review queue.

Pages are keyset-paginated on (created_at, id) with `choreo.pagination` cursors. Cards and list
entries come oldest first, payments newest first.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, or_, select, tuple_

from choreo.db import UnitOfWork
from choreo.pagination import decode_cursor, split_page
from choreo.sql import Row
from payment_service.domain import ChargeStatus, PaymentError, PaymentMethodNotFoundError
from payment_service.risk import ListAction, ListEntryNotFoundError, ListKind
from payment_service.tables import (
    charge_attempts,
    order_payments,
    payment_methods,
    risk_assessments,
    risk_list_entries,
)


class RiskAssessmentNotFoundError(PaymentError):
    """The order was never screened (unknown, or it ended before its charge)."""


@dataclass(frozen=True, slots=True)
class PaymentMethodView:
    id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    is_default: bool


@dataclass(frozen=True, slots=True)
class PaymentMethodPage:
    items: list[PaymentMethodView]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class PaymentView:
    order_id: str
    payment_id: str
    amount: int
    currency: str
    status: str
    decline_code: str | None
    refunded_amount: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AdminPaymentView(PaymentView):
    user_id: str
    card_fingerprint: str | None
    """Stripe's fingerprint of the card charged (what the risk lists' `card_fingerprint`
    entries name); None when no charge was attempted or the card predates fingerprints."""


@dataclass(frozen=True, slots=True)
class PaymentPage:
    items: list[PaymentView]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class AdminPaymentPage:
    items: list[AdminPaymentView]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ListEntryView:
    id: str
    kind: ListKind
    value: str
    action: ListAction
    note: str | None
    created_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ListEntryPage:
    items: list[ListEntryView]
    next_cursor: str | None


_METHOD_COLUMNS = (
    payment_methods.c.id,
    payment_methods.c.brand,
    payment_methods.c.last4,
    payment_methods.c.exp_month,
    payment_methods.c.exp_year,
    payment_methods.c.is_default,
    payment_methods.c.created_at,
)


async def payment_method(uow: UnitOfWork, user_id: str, method_id: uuid.UUID) -> PaymentMethodView:
    async with uow:
        row = (
            await uow.session.execute(
                select(*_METHOD_COLUMNS).where(
                    payment_methods.c.id == method_id, payment_methods.c.user_id == user_id
                )
            )
        ).first()
    if row is None:
        raise PaymentMethodNotFoundError(f"no payment method {method_id}")
    return _method(row)


async def payment_methods_of(
    uow: UnitOfWork, user_id: str, *, limit: int, cursor: str | None
) -> PaymentMethodPage:
    """One page of the user's saved cards, oldest first."""
    query = select(*_METHOD_COLUMNS).where(payment_methods.c.user_id == user_id)
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(
            tuple_(payment_methods.c.created_at, payment_methods.c.id) > (created_at, last_id)
        )
    query = query.order_by(payment_methods.c.created_at, payment_methods.c.id).limit(limit + 1)
    async with uow:
        rows = (await uow.session.execute(query)).all()
    page, next_cursor = split_page(rows, limit, lambda row: (row.created_at, row.id))
    return PaymentMethodPage([_method(row) for row in page], next_cursor)


async def payments_of(
    uow: UnitOfWork, user_id: str, *, limit: int, cursor: str | None
) -> PaymentPage:
    """One page of the user's payments, newest first."""
    page, next_cursor = await _payments(uow, user_id=user_id, limit=limit, cursor=cursor)
    return PaymentPage([PaymentView(**_payment_fields(row)) for row in page], next_cursor)


async def all_payments(uow: UnitOfWork, *, limit: int, cursor: str | None) -> AdminPaymentPage:
    """One page of everyone's payments, newest first, each with its user."""
    page, next_cursor = await _payments(uow, user_id=None, limit=limit, cursor=cursor)
    items = [
        AdminPaymentView(
            **_payment_fields(row), user_id=row.user_id, card_fingerprint=row.card_fingerprint
        )
        for row in page
    ]
    return AdminPaymentPage(items, next_cursor)


async def _payments(
    uow: UnitOfWork, *, user_id: str | None, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """One page of payment rows, newest first: the user's, or everyone's when `user_id` is None.

    A payment is an order whose charge was at least attempted; one in flight is CHARGING. An
    order never charged (NONE, or EXPIRED: given up before any money moved) is no payment.
    """
    attempted = charge_attempts.c.order_id.is_not(None)
    not_charged = order_payments.c.status == ChargeStatus.NONE.value
    status = case(
        (and_(not_charged, attempted), ChargeStatus.CHARGING.value),
        else_=order_payments.c.status,
    )
    never_charged = (ChargeStatus.NONE.value, ChargeStatus.EXPIRED.value)
    conditions: list[ColumnElement[bool]] = [
        order_payments.c.order_known,
        or_(order_payments.c.status.not_in(never_charged), attempted),
    ]
    if user_id is not None:
        conditions.append(order_payments.c.user_id == user_id)
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        conditions.append(
            tuple_(order_payments.c.created_at, order_payments.c.order_id) < (created_at, last_id)
        )
    query = (
        select(
            order_payments.c.order_id,
            order_payments.c.payment_id,
            order_payments.c.user_id,
            order_payments.c.amount,
            order_payments.c.currency,
            status.label("status"),
            order_payments.c.decline_code,
            order_payments.c.refunded_amount,
            order_payments.c.created_at,
            charge_attempts.c.card_fingerprint,
        )
        .outerjoin(charge_attempts, charge_attempts.c.order_id == order_payments.c.order_id)
        .where(*conditions)
        .order_by(order_payments.c.created_at.desc(), order_payments.c.order_id.desc())
        .limit(limit + 1)
    )
    async with uow:
        rows = (await uow.session.execute(query)).all()
    return split_page(rows, limit, lambda row: (row.created_at, row.order_id))


def _method(row: Row) -> PaymentMethodView:
    return PaymentMethodView(
        id=str(row.id),
        brand=row.brand,
        last4=row.last4,
        exp_month=row.exp_month,
        exp_year=row.exp_year,
        is_default=row.is_default,
    )


def _payment_fields(row: Row) -> dict[str, Any]:
    """A payment row as PaymentView's fields."""
    return {
        "order_id": str(row.order_id),
        "payment_id": str(row.payment_id),
        "amount": row.amount,
        "currency": row.currency,
        "status": row.status,
        "decline_code": row.decline_code,
        "refunded_amount": row.refunded_amount,
        "created_at": row.created_at,
    }


async def list_entry(uow: UnitOfWork, entry_id: uuid.UUID) -> ListEntryView:
    """Raises ListEntryNotFoundError for an unknown id."""
    async with uow:
        row = (
            await uow.session.execute(
                select(risk_list_entries).where(risk_list_entries.c.id == entry_id)
            )
        ).first()
    if row is None:
        raise ListEntryNotFoundError(f"no list entry {entry_id}")
    return _list_entry(row)


async def list_entries(
    uow: UnitOfWork,
    *,
    kind: ListKind | None,
    action: ListAction | None,
    limit: int,
    cursor: str | None,
) -> ListEntryPage:
    """One page of the risk lists' entries, oldest first, of one kind or action if given."""
    query = select(risk_list_entries)
    if kind is not None:
        query = query.where(risk_list_entries.c.kind == kind.value)
    if action is not None:
        query = query.where(risk_list_entries.c.action == action.value)
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(
            tuple_(risk_list_entries.c.created_at, risk_list_entries.c.id) > (created_at, last_id)
        )
    query = query.order_by(risk_list_entries.c.created_at, risk_list_entries.c.id).limit(limit + 1)
    async with uow:
        rows = (await uow.session.execute(query)).all()
    page, next_cursor = split_page(rows, limit, lambda row: (row.created_at, row.id))
    return ListEntryPage([_list_entry(row) for row in page], next_cursor)


def _list_entry(row: Row) -> ListEntryView:
    return ListEntryView(
        id=str(row.id),
        kind=ListKind(row.kind),
        value=row.value,
        action=ListAction(row.action),
        note=row.note,
        created_by=row.created_by,
        created_at=row.created_at,
    )


@dataclass(frozen=True, slots=True)
class RiskReasonView:
    rule: str
    points: int
    detail: str


@dataclass(frozen=True, slots=True)
class RiskAssessmentView:
    """A screening decision and its explanation; the review of a REVIEW."""

    order_id: str
    user_id: str
    decision: str
    score: int
    reasons: list[RiskReasonView]
    counters: dict[str, int | None] | None
    assessed_at: datetime
    amount: int | None
    currency: str | None
    payment_status: str | None
    review_status: str | None
    review_opened_at: datetime | None
    review_expires_at: datetime | None
    review_closed_at: datetime | None
    review_closed_by: str | None
    review_note: str | None


@dataclass(frozen=True, slots=True)
class RiskAssessmentPage:
    items: list[RiskAssessmentView]
    next_cursor: str | None


def _assessments() -> Any:
    return select(
        risk_assessments,
        order_payments.c.amount,
        order_payments.c.currency,
        order_payments.c.status.label("payment_status"),
    ).outerjoin(order_payments, order_payments.c.order_id == risk_assessments.c.order_id)


async def risk_assessment(uow: UnitOfWork, order_id: uuid.UUID) -> RiskAssessmentView:
    """Raises RiskAssessmentNotFoundError when the order was never screened."""
    async with uow:
        row = (
            await uow.session.execute(_assessments().where(risk_assessments.c.order_id == order_id))
        ).first()
    if row is None:
        raise RiskAssessmentNotFoundError(f"order {order_id} was not screened")
    return _assessment(row)


async def reviews(
    uow: UnitOfWork, *, status: str | None, limit: int, cursor: str | None
) -> RiskAssessmentPage:
    """The review queue, oldest first (the next to expire): orders held for review, of one
    review status if given."""
    query = _assessments().where(risk_assessments.c.review_status.is_not(None))
    if status is not None:
        query = query.where(risk_assessments.c.review_status == status)
    if cursor is not None:
        opened_at, last_id = decode_cursor(cursor)
        query = query.where(
            tuple_(risk_assessments.c.review_opened_at, risk_assessments.c.order_id)
            > (opened_at, last_id)
        )
    query = query.order_by(risk_assessments.c.review_opened_at, risk_assessments.c.order_id).limit(
        limit + 1
    )
    async with uow:
        rows = (await uow.session.execute(query)).all()
    page, next_cursor = split_page(rows, limit, lambda row: (row.review_opened_at, row.order_id))
    return RiskAssessmentPage([_assessment(row) for row in page], next_cursor)


def _assessment(row: Row) -> RiskAssessmentView:
    return RiskAssessmentView(
        order_id=str(row.order_id),
        user_id=row.user_id,
        decision=row.decision,
        score=row.score,
        reasons=[RiskReasonView(**reason) for reason in row.reasons],
        counters=row.counters,
        assessed_at=row.assessed_at,
        amount=row.amount,
        currency=row.currency,
        payment_status=row.payment_status,
        review_status=row.review_status,
        review_opened_at=row.review_opened_at,
        review_expires_at=row.review_expires_at,
        review_closed_at=row.review_closed_at,
        review_closed_by=row.review_closed_by,
        review_note=row.review_note,
    )
