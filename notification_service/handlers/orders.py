"""order.create, order.event, payment.event and stock.updated: the notices of an order's
saga, and low stock to the admins.

The order an OrderCreated carries, and a cancellation, are committed on their own, before
their notice is sent, so that notices waiting for them do not also wait for that e-mail. A
notice a cancellation makes untrue (domain.CONTRADICTED_BY_CANCELLATION) handled after it is
not sent at all. A notice whose recipient or order has not arrived yet (topics are consumed
concurrently) raises NotKnownYetError, which the consumer retries.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert

from choreo import records
from choreo.db import UnitOfWork
from choreo.events import Event
from choreo.sql import Session
from notification_service.domain import (
    CONTRADICTED_BY_CANCELLATION,
    Kind,
    NotKnownYetError,
    cancel_reason_in_words,
    count_of,
    decline_reason_in_words,
    format_money,
    order_reference,
)
from notification_service.handlers.notifying import Notifier, admins_of, notify, notify_user
from notification_service.tables import order_cancellations, orders

log = logging.getLogger(__name__)

# The statements run for every notice are built once, with bind parameters, and executed with
# their values: a statement built anew per call costs ~125 µs of client CPU against ~60 µs
# (building it and its cache key; choreo.sql compiles each shape once either way). An INSERT's
# columns are the keys of the parameters it is executed with.

_REMEMBER_ORDER = insert(orders).on_conflict_do_nothing()


async def on_order_created(
    record: records.OrderCreated,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    notifier: Notifier,
) -> None:
    order_id, user_id = record.order_id, record.user_id
    item_count = sum(line.quantity for line in record.items)
    async with notifier.new_unit_of_work().autocommit() as facts:  # one INSERT
        await facts.session.execute(
            _REMEMBER_ORDER,
            {
                "order_id": uuid.UUID(order_id),
                "user_id": user_id,
                "total": record.total_amount,
                "currency": record.currency,
                "item_count": item_count,
            },
        )
    context = {
        **_order_context(order_id),
        "items": count_of(item_count, "item"),
        "total": format_money(record.total_amount, record.currency),
    }
    await notify_user(
        uow, notifier, event, user_id, Kind.ORDER_RECEIVED, context, order_id=order_id
    )


async def on_order_confirmed(
    record: records.OrderConfirmed,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    notifier: Notifier,
) -> None:
    order_id = record.order_id
    context = {
        **_order_context(order_id),
        "total": format_money(record.total_amount, record.currency),
    }
    await notify_user(
        uow, notifier, event, record.user_id, Kind.ORDER_CONFIRMED, context, order_id=order_id
    )


_REMEMBER_CANCELLATION = insert(order_cancellations).on_conflict_do_nothing()


async def on_order_cancelled(
    record: records.OrderCancelled,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    notifier: Notifier,
) -> None:
    async with notifier.new_unit_of_work().autocommit() as facts:  # one INSERT
        await facts.session.execute(
            _REMEMBER_CANCELLATION,
            {
                "order_id": uuid.UUID(record.order_id),
                "reason": record.reason,
                "cancelled_at": record.cancelled_at,
            },
        )
    context = {
        **_order_context(record.order_id),
        "reason": cancel_reason_in_words(record.reason),
        "refund": record.charged,
    }
    await notify_user(uow, notifier, event, record.user_id, Kind.ORDER_CANCELLED, context)


# payment.event: these name the order only; its customer comes from the order replica.


async def on_payment_failed(
    record: records.PaymentFailed,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    notifier: Notifier,
) -> None:
    user_id = await _customer_of(uow.session, record.order_id)
    context = {
        **_order_context(record.order_id),
        "amount": format_money(record.amount, record.currency),
        "reason": decline_reason_in_words(record.decline_code, record.message),
    }
    await notify_user(uow, notifier, event, user_id, Kind.PAYMENT_FAILED, context)


async def on_payment_action_required(
    record: records.PaymentActionRequired,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    notifier: Notifier,
) -> None:
    """Ask the customer to confirm the payment (3-D Secure) in the shop's app, where their
    order's view holds what their client needs; the message carries no secret and no link.
    Not sent once the order is known cancelled."""
    if await _contradicts_cancellation(uow.session, record.order_id, Kind.PAYMENT_ACTION_REQUIRED):
        return
    user_id = await _customer_of(uow.session, record.order_id)
    context = {
        **_order_context(record.order_id),
        "amount": format_money(record.amount, record.currency),
    }
    await notify_user(uow, notifier, event, user_id, Kind.PAYMENT_ACTION_REQUIRED, context)


async def on_payment_refunded(
    record: records.PaymentRefunded,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    notifier: Notifier,
) -> None:
    user_id = await _customer_of(uow.session, record.order_id)
    context = {
        **_order_context(record.order_id),
        "amount": format_money(record.amount, record.currency),
    }
    await notify_user(uow, notifier, event, user_id, Kind.REFUND_ISSUED, context)


# stock.updated: to every admin.


async def on_low_stock_detected(
    record: records.LowStockDetected,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    notifier: Notifier,
) -> None:
    context = {
        "product": record.product_name,
        "product_id": record.product_id,
        "available": record.available,
        "threshold": record.threshold,
    }
    admins = await admins_of(uow.session)
    if not admins:
        log.info("low stock of product %s: no admin to tell", record.product_id)
    for admin in admins:
        await notify(uow, notifier, event, admin, Kind.LOW_STOCK, context)


_CANCELLATION_REASON = select(order_cancellations.c.reason).where(
    order_cancellations.c.order_id == bindparam("order_id")
)


async def _contradicts_cancellation(session: Session, order_id: str, kind: Kind) -> bool:
    """Whether `kind` is not to be sent because the order is known to be cancelled."""
    if kind not in CONTRADICTED_BY_CANCELLATION:
        return False
    reason = await session.scalar(_CANCELLATION_REASON, {"order_id": uuid.UUID(order_id)})
    if reason is None:
        return False
    log.info("no %s notification of order %s: it was cancelled (%s) before", kind, order_id, reason)
    return True


_CUSTOMER_OF = select(orders.c.user_id).where(orders.c.order_id == bindparam("order_id"))


async def _customer_of(session: Session, order_id: str) -> str:
    found = await session.execute(_CUSTOMER_OF, {"order_id": uuid.UUID(order_id)})
    user_id = found.scalar_one_or_none()
    if user_id is None:
        raise NotKnownYetError(f"order {order_id} not known yet")
    return str(user_id)


def _order_context(order_id: str) -> dict[str, object]:
    return {"order": order_reference(order_id), "order_id": order_id}
