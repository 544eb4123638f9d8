"""Read side of the payment service: a user's saved cards and the payments of orders.

Pages are keyset-paginated on (created_at, id) with `choreo.pagination` cursors. Cards come
oldest first, payments newest first.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, case, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from choreo.pagination import decode_cursor, split_page
from payment_service.domain import ChargeStatus, PaymentMethodNotFoundError
from payment_service.tables import charge_attempts, order_payments, payment_methods


@dataclass(frozen=True, slots=True)
class PaymentMethod:
    id: uuid.UUID
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    is_default: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Payment:
    order_id: uuid.UUID
    payment_id: uuid.UUID
    user_id: str
    amount: int
    currency: str
    status: str
    decline_code: str | None
    refunded_amount: int
    created_at: datetime


_METHOD_COLUMNS = (
    payment_methods.c.id,
    payment_methods.c.brand,
    payment_methods.c.last4,
    payment_methods.c.exp_month,
    payment_methods.c.exp_year,
    payment_methods.c.is_default,
    payment_methods.c.created_at,
)


async def payment_method(
    session: AsyncSession, user_id: str, method_id: uuid.UUID
) -> PaymentMethod:
    row = (
        await session.execute(
            select(*_METHOD_COLUMNS).where(
                payment_methods.c.id == method_id, payment_methods.c.user_id == user_id
            )
        )
    ).first()
    if row is None:
        raise PaymentMethodNotFoundError(f"no payment method {method_id}")
    return PaymentMethod(*row)


async def payment_methods_of(
    session: AsyncSession, user_id: str, *, limit: int, cursor: str | None
) -> tuple[list[PaymentMethod], str | None]:
    """One page of the user's saved cards, oldest first."""
    query = select(*_METHOD_COLUMNS).where(payment_methods.c.user_id == user_id)
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(
            tuple_(payment_methods.c.created_at, payment_methods.c.id) > (created_at, last_id)
        )
    query = query.order_by(payment_methods.c.created_at, payment_methods.c.id).limit(limit + 1)
    fetched = [PaymentMethod(*row) for row in await session.execute(query)]
    return split_page(fetched, limit, lambda method: (method.created_at, method.id))


async def payments(
    session: AsyncSession, *, user_id: str | None, limit: int, cursor: str | None
) -> tuple[list[Payment], str | None]:
    """One page of payments, newest first: the user's, or everyone's when `user_id` is None.

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
            status,
            order_payments.c.decline_code,
            order_payments.c.refunded_amount,
            order_payments.c.created_at,
        )
        .outerjoin(charge_attempts, charge_attempts.c.order_id == order_payments.c.order_id)
        .where(*conditions)
        .order_by(order_payments.c.created_at.desc(), order_payments.c.order_id.desc())
        .limit(limit + 1)
    )
    fetched = [Payment(*row) for row in await session.execute(query)]
    return split_page(fetched, limit, lambda payment: (payment.created_at, payment.order_id))
