"""The inventory service's handlers: one async function per event consumed or command served.

An event handler runs inside the consumer's unit of work; a command handler opens the one it
is given. Each locks what it changes, asks domain.py what to do, and writes rows and outgoing
events in that transaction.
Lock order is always the reservation row first, then products in id order, so concurrent
handlers never deadlock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert

from choreo import records
from choreo.db import UnitOfWork
from choreo.errors import TransientError
from choreo.events import Event
from choreo.sql import Session
from inventory_service import domain
from inventory_service.domain import ReservationStatus, StockLevel, StockMove, Transition
from inventory_service.tables import products, reservation_lines, reservations, stock_adjustments

# The statements run for every order are built once, with bind parameters, and executed with
# their values: a statement built anew per call costs ~125 µs of client CPU against ~60 µs
# (building it and its cache key; choreo.sql compiles each shape once either way). An INSERT's
# columns are the keys of the parameters it is executed with; its `.values()` holds only what
# every row gets.

INITIAL_STOCK_REASON = "initial stock"


@dataclass(frozen=True, slots=True)
class LockedProduct:
    """A product row held `FOR UPDATE` by this transaction."""

    id: str
    name: str
    low_stock_threshold: int
    low_stock_alerted: bool
    level: StockLevel
    deleted: bool


@dataclass(frozen=True, slots=True)
class NewProduct:
    """What an admin gives to create a product; `stock` is its initial available units."""

    name: str
    description: str
    category: str
    price: int
    currency: str
    stock: int
    low_stock_threshold: int
    features: list[str]
    image_url: str | None


# Events (docs/saga.md, inventory).

# The tombstone of an order that came past its deadline (nothing reserved).
_RECORD_EXPIRY = (
    insert(reservations)
    .values(status=ReservationStatus.EXPIRED_BEFORE_RESERVATION)
    .on_conflict_do_nothing()
)
_CLAIM_RESERVATION = (
    insert(reservations)
    .values(status=ReservationStatus.RESERVED)
    .on_conflict_do_nothing()
    .returning(reservations.c.order_id)
)
# Its lines, one parameter set each (executemany).
_ADD_RESERVATION_LINES = insert(reservation_lines)


async def on_order_created(
    record: records.OrderCreated,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    now: Callable[[], datetime],
) -> None:
    """Reserve every line of a new order or none; an order seen before is left alone, and
    one past its deadline gets a tombstone instead (the order service cancels it, TIMEOUT)."""
    order_id = record.order_id
    lines = domain.order_lines((line.product_id, line.quantity) for line in record.items)
    session = uow.session
    moment, deadline = now(), record.deadline
    if domain.too_late_to_reserve(deadline, moment):
        reason = domain.expiry_reason(deadline, moment)
        await session.execute(_RECORD_EXPIRY, {"order_id": order_id, "reason": reason})
        return
    claimed = await session.execute(_CLAIM_RESERVATION, {"order_id": order_id})
    if claimed.first() is None:
        return  # a duplicate OrderCreated, or the order was cancelled before it arrived
    locked = await _lock_products(session, lines)
    on_sale = {product_id: p.level for product_id, p in locked.items() if not p.deleted}
    outcome = domain.reserve_all(lines, on_sale)
    if isinstance(outcome, domain.Rejection):
        await _set_status(session, order_id, ReservationStatus.REJECTED, outcome.reason)
        rejected = records.StockRejected(
            order_id=order_id,
            reason=str(outcome.reason),
            unavailable_product_ids=tuple(outcome.product_ids),
            rejected_at=moment,
        )
        uow.publish(rejected, traceparent=event.traceparent)
        return
    await session.execute(
        _ADD_RESERVATION_LINES,
        [{"order_id": order_id, "product_id": p, "quantity": q} for p, q in lines.items()],
    )
    reserved = records.StockReserved(
        order_id=order_id, items=_stock_lines(lines), reserved_at=moment
    )
    uow.publish(reserved, traceparent=event.traceparent)
    for product_id, level in outcome.items():
        await _write_level(uow, locked[product_id], level, moment, event.traceparent)


async def on_payment_failed(
    record: records.PaymentFailed, uow: UnitOfWork, *, event: Event[records.Record]
) -> None:
    """Release the order's held units (reason PAYMENT_FAILED)."""
    await _move_reservation(
        record.order_id, event, uow, domain.on_payment_failed, reason="PAYMENT_FAILED"
    )


async def on_order_cancelled(
    record: records.OrderCancelled, uow: UnitOfWork, *, event: Event[records.Record]
) -> None:
    """Release held units, return sold ones, or leave a tombstone for a late OrderCreated."""
    await _move_reservation(
        record.order_id, event, uow, domain.on_order_cancelled, reason=record.reason
    )


async def on_order_confirmed(
    record: records.OrderConfirmed, uow: UnitOfWork, *, event: Event[records.Record]
) -> None:
    """The order's held units are sold."""
    await _move_reservation(record.order_id, event, uow, domain.on_order_confirmed, reason=None)


_LOCK_RESERVATION = (
    select(reservations.c.status)
    .where(reservations.c.order_id == bindparam("order_id"))
    .with_for_update()
)
# What a decision leaves for an order not reserved yet, unless its OrderCreated came meanwhile.
_LEAVE_TOMBSTONE = insert(reservations).on_conflict_do_nothing().returning(reservations.c.order_id)


async def _move_reservation(
    order_id: str,
    event: Event[records.Record],
    uow: UnitOfWork,
    decide: Callable[[ReservationStatus | None], Transition | None],
    *,
    reason: str | None,
) -> None:
    session = uow.session
    row = await session.execute(_LOCK_RESERVATION, {"order_id": order_id})
    status = row.scalar_one_or_none()
    transition = decide(None if status is None else ReservationStatus(status))
    if transition is None:
        return
    if transition.move is None:  # the tombstone: the order has no reservation yet
        created = await session.execute(
            _LEAVE_TOMBSTONE,
            {"order_id": order_id, "status": transition.status, "reason": reason},
        )
        if created.first() is None:
            raise TransientError(f"order {order_id} was reserved meanwhile; deciding again")
        return
    lines = await _reservation_lines(session, order_id)
    locked = await _lock_products(session, lines)
    now = datetime.now(UTC)
    await _set_status(session, order_id, transition.status, reason)
    if transition.move in (StockMove.RELEASE, StockMove.RETURN):
        released = records.StockReleased(
            order_id=order_id, items=_stock_lines(lines), reason=reason or "", released_at=now
        )
        uow.publish(released, traceparent=event.traceparent)
    for product_id, quantity in lines.items():
        product = locked.get(product_id)
        if product is None:
            raise domain.StockInvariantError(f"order {order_id} holds unknown product {product_id}")
        level = transition.move.apply(product.level, quantity)
        await _write_level(uow, product, level, now, event.traceparent)


# Commands (the admin API): each opens the unit of work it is given.


async def create_product(
    uow: UnitOfWork, product: NewProduct, *, actor_id: str, traceparent: str | None
) -> str:
    """Add a product with its initial stock (recorded as its first adjustment); its id."""
    product_id = str(uuid.uuid4())
    level = StockLevel(available=0)
    if product.stock:
        level = level.adjust(product.stock)
    async with uow:
        await uow.session.execute(
            insert(products).values(
                id=product_id,
                name=product.name,
                description=product.description,
                category=product.category,
                price=product.price,
                currency=product.currency,
                available=level.available,
                low_stock_threshold=product.low_stock_threshold,
                features=product.features,
                image_url=product.image_url,
            )
        )
        if product.stock:
            await _record_adjustment(
                uow.session, product_id, product.stock, INITIAL_STOCK_REASON, level, actor_id
            )
        uow.publish(_level_changed(product_id, level, datetime.now(UTC)), traceparent=traceparent)
    return product_id


async def update_product(uow: UnitOfWork, product_id: str, changes: Mapping[str, Any]) -> None:
    """Change catalog fields (never stock); ProductNotFoundError when missing or deleted.

    A threshold lowered below the available stock re-arms the low-stock alert; one raised above
    it alerts at the next stock change, not now.
    """
    values = dict(changes)
    if "low_stock_threshold" in values:
        values["low_stock_alerted"] = and_(
            products.c.low_stock_alerted, products.c.available <= values["low_stock_threshold"]
        )
    async with uow:
        updated = await uow.session.execute(
            update(products)
            .where(products.c.id == product_id, products.c.deleted_at.is_(None))
            .values(**values, updated_at=func.now())
            .returning(products.c.id)
        )
        if updated.first() is None:
            raise domain.ProductNotFoundError(f"no product {product_id}")


async def delete_product(uow: UnitOfWork, product_id: str) -> None:
    """Hide the product from the catalog and from new orders; its reservations still settle."""
    async with uow:
        deleted = await uow.session.execute(
            update(products)
            .where(products.c.id == product_id, products.c.deleted_at.is_(None))
            .values(deleted_at=func.now(), updated_at=func.now())
            .returning(products.c.id)
        )
        if deleted.first() is None:
            raise domain.ProductNotFoundError(f"no product {product_id}")


async def adjust_stock(
    uow: UnitOfWork,
    product_id: str,
    delta: int,
    *,
    reason: str | None,
    actor_id: str,
    traceparent: str | None,
) -> None:
    """Restock (delta > 0) or write off (delta < 0) available units, recorded as an adjustment."""
    async with uow:
        locked = await _lock_products(uow.session, [product_id])
        product = locked.get(product_id)
        if product is None or product.deleted:
            raise domain.ProductNotFoundError(f"no product {product_id}")
        level = product.level.adjust(delta)
        await _record_adjustment(uow.session, product_id, delta, reason, level, actor_id)
        await _write_level(uow, product, level, datetime.now(UTC), traceparent)


# Rows and events.


_LOCK_PRODUCTS = (
    select(
        products.c.id,
        products.c.name,
        products.c.low_stock_threshold,
        products.c.low_stock_alerted,
        products.c.available,
        products.c.reserved,
        products.c.sold,
        products.c.deleted_at,
    )
    .where(products.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(products.c.id)
    .with_for_update()
)


async def _lock_products(session: Session, product_ids: Iterable[str]) -> dict[str, LockedProduct]:
    """The products of `product_ids` that exist (deleted ones too), locked in id order."""
    rows = await session.execute(_LOCK_PRODUCTS, {"ids": sorted(product_ids)})
    return {
        row.id: LockedProduct(
            id=row.id,
            name=row.name,
            low_stock_threshold=row.low_stock_threshold,
            low_stock_alerted=row.low_stock_alerted,
            level=StockLevel(row.available, row.reserved, row.sold),
            deleted=row.deleted_at is not None,
        )
        for row in rows
    }


_RESERVATION_LINES = (
    select(reservation_lines.c.product_id, reservation_lines.c.quantity)
    .where(reservation_lines.c.order_id == bindparam("order_id"))
    .order_by(reservation_lines.c.product_id)
)


async def _reservation_lines(session: Session, order_id: str) -> dict[str, int]:
    rows = await session.execute(_RESERVATION_LINES, {"order_id": order_id})
    return {row.product_id: row.quantity for row in rows}


_SET_STATUS = (
    update(reservations)
    .where(reservations.c.order_id == bindparam("order_key"))
    .values(status=bindparam("status"), reason=bindparam("reason"), updated_at=func.now())
)


async def _set_status(
    session: Session, order_id: str, status: ReservationStatus, reason: str | None
) -> None:
    await session.execute(_SET_STATUS, {"order_key": order_id, "status": status, "reason": reason})


async def _record_adjustment(
    session: Session,
    product_id: str,
    delta: int,
    reason: str | None,
    level: StockLevel,
    actor_id: str,
) -> None:
    await session.execute(
        insert(stock_adjustments).values(
            product_id=product_id,
            delta=delta,
            reason=reason,
            available_after=level.available,
            actor_id=actor_id,
        )
    )


_WRITE_LEVEL = (
    update(products)
    .where(products.c.id == bindparam("product_key"))
    .values(
        available=bindparam("available"),
        reserved=bindparam("reserved"),
        sold=bindparam("sold"),
        low_stock_alerted=bindparam("low_stock_alerted"),
        updated_at=func.now(),
    )
)


async def _write_level(
    uow: UnitOfWork,
    product: LockedProduct,
    level: StockLevel,
    now: datetime,
    traceparent: str | None,
) -> None:
    """Store a product's new counters and announce them; announce a low level once per
    crossing of the threshold (domain.low_stock_alert)."""
    threshold = product.low_stock_threshold
    await uow.session.execute(
        _WRITE_LEVEL,
        {
            "product_key": product.id,
            "available": level.available,
            "reserved": level.reserved,
            "sold": level.sold,
            "low_stock_alerted": level.is_low(threshold),
        },
    )
    uow.publish(_level_changed(product.id, level, now), traceparent=traceparent)
    if domain.low_stock_alert(level, threshold, alerted=product.low_stock_alerted):
        low = records.LowStockDetected(
            product_id=product.id,
            product_name=product.name,
            available=level.available,
            threshold=product.low_stock_threshold,
            detected_at=now,
        )
        uow.publish(low, traceparent=traceparent)


def _level_changed(product_id: str, level: StockLevel, now: datetime) -> records.StockLevelChanged:
    return records.StockLevelChanged(
        product_id=product_id,
        available=level.available,
        reserved=level.reserved,
        sold=level.sold,
        changed_at=now,
    )


def _stock_lines(lines: Mapping[str, int]) -> tuple[records.StockLine, ...]:
    return tuple(records.StockLine(product_id=p, quantity=q) for p, q in lines.items())
