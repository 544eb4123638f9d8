"""What the order service does on each command and event: one async function each.

Every step that changes an order locks its row (`SELECT ... FOR UPDATE`), applies the domain's
rules, writes the new facts, the events to emit and the timeline in the caller's transaction.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter, Histogram
from sqlalchemy import DateTime, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from choreo import records
from choreo.db import UnitOfWork
from choreo.events import Event
from choreo.sql import Row
from order_service.domain import (
    OPEN_STATUSES,
    CancelReason,
    Emitted,
    IdempotencyKeyReusedError,
    OrderCancelled,
    OrderConfirmed,
    OrderLine,
    OrderNotFoundError,
    OrderState,
    OrderStatus,
    PricedOrder,
    Product,
    SagaEvent,
    Transition,
    advance_fulfilment,
    apply_saga_event,
    cancel_by_customer,
    check_payment_result,
    price_lines,
    request_fingerprint,
)
from order_service.tables import (
    order_items,
    order_payment_actions,
    order_refunds,
    order_risk,
    order_timeline,
    orders,
)

log = logging.getLogger(__name__)

# The statements run for every order are built once, with bind parameters, and executed with
# their values: a statement built anew per call costs ~125 µs of client CPU against ~60 µs
# (building it and its cache key; choreo.sql compiles each shape once either way). An INSERT's
# columns are the keys of the parameters it is executed with; its `.values()` holds only what
# every row gets.

SERVICE_NAME = "order_service"

# Once per order, when the saga decides it (it leaves PENDING, RESERVED or ON_HOLD); a customer who
# later cancels a confirmed order ends no saga. `reason` is the cancel reason ("" confirmed).
SAGA_OUTCOMES = Counter(
    "choreo_saga_outcomes_total", "Orders the saga decided, by outcome", ["outcome", "reason"]
)
SAGA_SECONDS = Histogram(
    "choreo_saga_duration_seconds",
    "From an order's creation to the saga's decision, by outcome",
    ["outcome", "reason"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300),
)

# Prices the products among the given ids that the catalog knows, by id.
PriceLookup = Callable[[Sequence[str]], Awaitable[dict[str, Product]]]


def utc_now() -> datetime:
    """Now, to the millisecond: events carry timestamp-millis, and the rows the same times."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class PlaceOrder:
    """A customer's order request, its lines already merged (one per product)."""

    user_id: str
    lines: tuple[OrderLine, ...]
    payment_method_id: str | None = None
    idempotency_key: str | None = None
    traceparent: str | None = None
    client_ip: str | None = None
    """Where the order was placed from (the gateway's `X-Real-IP`), for the risk screening."""


@dataclass(frozen=True)
class NewOrder:
    """An order as `place_order` wrote it (PENDING)."""

    order_id: str
    user_id: str
    payment_method_id: str | None
    priced: PricedOrder
    created_at: datetime
    deadline: datetime


@dataclass(frozen=True)
class PlacedOrder:
    """The order a request placed: `new` when this request wrote it; None when an earlier
    request with the same idempotency key did (read it: it may have moved on)."""

    order_id: str
    new: NewOrder | None = None


_INSERT_ORDER = (
    pg_insert(orders)
    .values(status=OrderStatus.PENDING.value)
    .on_conflict_do_nothing(index_elements=["user_id", "idempotency_key"])
    .returning(orders.c.id)
)
# Its lines, one parameter set each (executemany).
_INSERT_ITEMS = insert(order_items)


async def place_order(
    command: PlaceOrder,
    uow: UnitOfWork,
    lookup: PriceLookup,
    *,
    saga_timeout: timedelta,
    now: Callable[[], datetime] = utc_now,
) -> PlacedOrder:
    """Price the lines, then write the PENDING order and OrderCreated together.

    With an idempotency key, a repeated request (same user, key and body) gets the order the
    first one made, even when both race: the unique (user_id, idempotency_key) decides.
    """
    fingerprint = request_fingerprint(command.lines, command.payment_method_id)
    if command.idempotency_key is not None:
        async with uow:
            earlier = await _order_by_key(uow, command.user_id, command.idempotency_key)
        if earlier is not None:
            return PlacedOrder(_replay(earlier, fingerprint))
    priced = price_lines(command.lines, await lookup([line.product_id for line in command.lines]))
    order_id = str(uuid.uuid4())
    created_at = now()
    deadline = created_at + saga_timeout
    async with uow:
        inserted = await uow.session.execute(
            _INSERT_ORDER,
            {
                "id": order_id,
                "user_id": command.user_id,
                "total_amount": priced.total,
                "currency": priced.currency,
                "payment_method_id": command.payment_method_id,
                "deadline": deadline,
                "idempotency_key": command.idempotency_key,
                "request_hash": fingerprint,
                "created_at": created_at,
                "updated_at": created_at,
            },
        )
        if inserted.first() is None:
            # A concurrent request with the same key committed first; this one wrote nothing.
            assert command.idempotency_key is not None
            winner = await _order_by_key(uow, command.user_id, command.idempotency_key)
            assert winner is not None
            return PlacedOrder(_replay(winner, fingerprint))
        await uow.session.execute(
            _INSERT_ITEMS,
            [
                {
                    "order_id": order_id,
                    "line_number": number,
                    "product_id": line.product_id,
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price": line.unit_price,
                }
                for number, line in enumerate(priced.lines, start=1)
            ],
        )
        created = _order_created(order_id, command, priced, deadline, created_at)
        await _emit(uow, created, _created_summary(priced), created_at, command.traceparent)
    new = NewOrder(
        order_id, command.user_id, command.payment_method_id, priced, created_at, deadline
    )
    return PlacedOrder(order_id, new)


async def on_stock_reserved(
    record: records.StockReserved, uow: UnitOfWork, *, event: Event[records.Record]
) -> None:
    summary = f"stock reserved for {len(record.items)} line(s)"
    await _apply(record.order_id, event, uow, SagaEvent.STOCK_RESERVED, summary)


async def on_stock_rejected(
    record: records.StockRejected, uow: UnitOfWork, *, event: Event[records.Record]
) -> None:
    products = ", ".join(record.unavailable_product_ids) or "none named"
    summary = f"stock rejected ({record.reason}): {products}"
    await _apply(record.order_id, event, uow, SagaEvent.STOCK_REJECTED, summary)


async def on_payment_succeeded(
    record: records.PaymentSucceeded, uow: UnitOfWork, *, event: Event[records.Record]
) -> None:
    summary = f"payment of {record.amount} {record.currency} succeeded"
    check = _payment_of_the_order(record.amount, record.currency)
    await _apply(record.order_id, event, uow, SagaEvent.PAYMENT_SUCCEEDED, summary, check=check)


async def on_payment_failed(
    record: records.PaymentFailed, uow: UnitOfWork, *, event: Event[records.Record]
) -> None:
    summary = f"payment failed ({record.decline_code}): {record.message}"
    check = _payment_of_the_order(record.amount, record.currency)
    await _apply(record.order_id, event, uow, SagaEvent.PAYMENT_FAILED, summary, check=check)


_KEEP_REFUND = pg_insert(order_refunds).on_conflict_do_nothing()


async def on_payment_refunded(
    record: records.PaymentRefunded, uow: UnitOfWork, *, event: Event[records.Record]
) -> None:
    """Keep the refund for the reports, and show it on the order's timeline. The order's
    status is not the refund's business: a refund follows a cancellation already applied."""
    await uow.session.execute(
        _KEEP_REFUND,
        {
            "refund_id": record.refund_id,
            "order_id": record.order_id,
            "amount": record.amount,
            "currency": record.currency,
            "refunded_at": record.refunded_at,
        },
    )
    if await _lock(uow, record.order_id) is not None:
        summary = f"refund of {record.amount} {record.currency} issued"
        await _append_timeline(
            uow, record.order_id, event, "consumed", _source_name(event.source), summary
        )


_KEEP_RISK_DECISION = pg_insert(order_risk).on_conflict_do_nothing()
# A held order's deadline moves to `held_until` unless it is later already.
_EXTEND_HOLD = (
    update(orders)
    .where(
        orders.c.id == bindparam("order_key"),
        orders.c.status == OrderStatus.ON_HOLD.value,
        orders.c.deadline < bindparam("held_until"),
    )
    .values(deadline=bindparam("held_until"))
)


async def on_risk_assessed(
    record: records.RiskAssessed,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    saga_timeout: timedelta,
) -> None:
    """Keep the decision for the risk report; a decision that opened a review holds the order
    (ON_HOLD) and moves its deadline past the review's expiry, by which the payment service
    will have rejected it: the deadline sweep only cancels a hold the payment service lost."""
    await uow.session.execute(
        _KEEP_RISK_DECISION,
        {
            "order_id": record.order_id,
            "decision": record.decision,
            "score": record.score,
            "assessed_at": record.assessed_at,
            "review_expires_at": record.review_expires_at,
        },
    )
    rules = ", ".join(reason.rule for reason in record.reasons) or "no rule matched"
    summary = f"risk screening: {record.decision} (score {record.score}; {rules})"
    expires = record.review_expires_at
    if record.decision != "REVIEW" or expires is None:
        if await _lock(uow, record.order_id) is not None:
            source = _source_name(event.source)
            await _append_timeline(uow, record.order_id, event, "consumed", source, summary)
        return
    summary += f", review until {expires.isoformat(timespec='seconds')}"
    await _apply(record.order_id, event, uow, SagaEvent.HELD_FOR_REVIEW, summary)
    await uow.session.execute(
        _EXTEND_HOLD, {"order_key": record.order_id, "held_until": expires + saga_timeout}
    )


# The deadline moves to `until` unless it is later already. `until` is typed as the values
# bound before were (a timezone-aware datetime): `greatest()` gives it no type of its own.
_AWAIT_PAYMENT_ACTION = (
    update(orders)
    .where(
        orders.c.id == bindparam("order_key"),
        orders.c.status == OrderStatus.AWAITING_PAYMENT_ACTION.value,
    )
    .values(
        deadline=func.greatest(orders.c.deadline, bindparam("until", type_=DateTime(timezone=True)))
    )
    .returning(orders.c.id)
)
_KEEP_PAYMENT_ACTION = pg_insert(order_payment_actions).on_conflict_do_nothing()


async def on_payment_action_required(
    record: records.PaymentActionRequired,
    uow: UnitOfWork,
    *,
    event: Event[records.Record],
    payment_action_timeout: timedelta,
) -> None:
    """The card asked for authentication (3-D Secure): the order waits for its customer
    (AWAITING_PAYMENT_ACTION), its view shows what their client needs, and its deadline moves
    to the end of the time they have (unless it is later already). The payment's outcome
    arrives as PaymentSucceeded or PaymentFailed; the deadline sweep ends an abandoned one."""
    summary = f"payment of {record.amount} {record.currency} awaits the customer's authentication"
    check = _payment_of_the_order(record.amount, record.currency)
    await _apply(
        record.order_id, event, uow, SagaEvent.PAYMENT_ACTION_REQUIRED, summary, check=check
    )
    waiting = await uow.session.execute(
        _AWAIT_PAYMENT_ACTION,
        {"order_key": record.order_id, "until": record.required_at + payment_action_timeout},
    )
    if waiting.first() is None:
        return  # decided, held or cancelled meanwhile: nothing for the customer to do
    await uow.session.execute(
        _KEEP_PAYMENT_ACTION,
        {
            "order_id": record.order_id,
            "provider_payment_id": record.provider_payment_id,
            "client_secret": record.client_secret,
            "next_action_type": record.next_action_type,
            "redirect_url": record.redirect_url,
            "required_at": record.required_at,
        },
    )


def _payment_of_the_order(amount: int, currency: str) -> Callable[[Row], None]:
    def check(order: Row) -> None:
        check_payment_result(order.total_amount, order.currency, amount, currency)

    return check


async def cancel_order(
    order_id: str,
    user_id: str,
    uow: UnitOfWork,
    *,
    traceparent: str | None = None,
    now: Callable[[], datetime] = utc_now,
) -> None:
    """The customer cancels their own order (404 for anyone else's)."""
    async with uow:
        order = await _lock(uow, order_id)
        if order is None or order.user_id != user_id:
            raise OrderNotFoundError(order_id)
        transition = cancel_by_customer(_state_of(order))
        await _write(uow, order, transition, now(), traceparent)


async def change_fulfilment_status(
    order_id: str,
    target: OrderStatus,
    uow: UnitOfWork,
    *,
    now: Callable[[], datetime] = utc_now,
) -> None:
    """An admin moves a confirmed order through PROCESSING to COMPLETED."""
    async with uow:
        order = await _lock(uow, order_id)
        if order is None:
            raise OrderNotFoundError(order_id)
        new_state = advance_fulfilment(_state_of(order), target)
        await _write(uow, order, Transition(new_state), now(), None)


async def cancel_overdue_orders(
    uow: UnitOfWork, *, batch_size: int, now: Callable[[], datetime] = utc_now
) -> int:
    """Cancel (TIMEOUT) up to `batch_size` undecided orders past their deadline; return how many.

    Rows another replica's sweep (or a saga step) holds are skipped, not waited for.
    """
    async with uow:
        moment = now()
        overdue = await uow.session.execute(
            select(orders)
            .where(
                orders.c.status.in_([status.value for status in OPEN_STATUSES]),
                orders.c.deadline <= moment,
            )
            .order_by(orders.c.deadline)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
        rows = overdue.all()
        for order in rows:
            transition = apply_saga_event(_state_of(order), SagaEvent.DEADLINE_PASSED)
            await _write(uow, order, transition, moment, None)
    if rows:
        log.info("cancelled %d order(s) past their deadline", len(rows))
    return len(rows)


async def _apply(
    order_id: str,
    event: Event[records.Record],
    uow: UnitOfWork,
    saga_event: SagaEvent,
    summary: str,
    *,
    check: Callable[[Row], None] | None = None,
) -> None:
    """Apply one saga event to its order. `check` tests the event against the order's facts
    and raises `RejectedEventError` (the consumer dead-letters it) when they disagree."""
    order = await _lock(uow, order_id)
    if order is None:
        # OrderCreated commits with its order, so an unknown id is another system's order.
        log.warning(
            "ignoring %s %s for unknown order %s (from %s)",
            event.type,
            event.id,
            order_id,
            event.source or "an unnamed source",
        )
        return
    if check is not None:
        check(order)
    await _append_timeline(uow, order_id, event, "consumed", _source_name(event.source), summary)
    transition = apply_saga_event(_state_of(order), saga_event)
    await _write(uow, order, transition, utc_now(), event.traceparent)


_FORGET_PAYMENT_ACTION = delete(order_payment_actions).where(
    order_payment_actions.c.order_id == bindparam("order_key")
)
_DECIDE_REVIEW = (
    update(order_risk)
    .where(
        order_risk.c.order_id == bindparam("order_key"), order_risk.c.review_decided_at.is_(None)
    )
    .values(review_decided_at=bindparam("review_decided_at"))
)
_UPDATE_ORDER = (
    update(orders)
    .where(orders.c.id == bindparam("order_key"))
    .values(
        status=bindparam("status"),
        cancel_reason=bindparam("cancel_reason"),
        charged=bindparam("charged"),
        updated_at=bindparam("updated_at"),
    )
)


async def _write(
    uow: UnitOfWork,
    order: Row,
    transition: Transition,
    moment: datetime,
    traceparent: str | None,
) -> None:
    """Store the transition's new facts and emit its events (timeline included)."""
    state = transition.state
    waiting = OrderStatus.AWAITING_PAYMENT_ACTION
    if order.status == waiting.value and state.status is not waiting:
        # The customer's action is no longer of use: its client secret goes.
        await uow.session.execute(_FORGET_PAYMENT_ACTION, {"order_key": order.id})
    if order.status == OrderStatus.ON_HOLD.value and state.status is not OrderStatus.ON_HOLD:
        # The hold ended: approved, rejected or expired (the payment's outcome), cancelled.
        await uow.session.execute(
            _DECIDE_REVIEW, {"order_key": order.id, "review_decided_at": moment}
        )
    if state != _state_of(order):
        await uow.session.execute(
            _UPDATE_ORDER,
            {
                "order_key": order.id,
                "status": state.status.value,
                "cancel_reason": state.cancel_reason.value if state.cancel_reason else None,
                "charged": state.charged,
                "updated_at": moment,
            },
        )
    for emitted in transition.emitted:
        record = _record_of(emitted, order, moment)
        await _emit(uow, record, _emitted_summary(emitted, order), moment, traceparent)
        if isinstance(emitted, OrderConfirmed) or emitted.previous_status in OPEN_STATUSES:
            uow.after_commit(_saga_decided(emitted, (moment - order.created_at).total_seconds()))


def _saga_decided(emitted: Emitted, seconds: float) -> Callable[[], None]:
    """Counts the saga's decision, once its transaction committed (a retried step once)."""
    outcome, reason = (
        ("cancelled", emitted.reason.value)
        if isinstance(emitted, OrderCancelled)
        else ("confirmed", "")
    )

    def count() -> None:
        SAGA_OUTCOMES.labels(outcome, reason).inc()
        SAGA_SECONDS.labels(outcome, reason).observe(seconds)

    return count


async def _emit(
    uow: UnitOfWork,
    record: records.Record,
    summary: str,
    moment: datetime,
    traceparent: str | None,
) -> None:
    event = uow.publish(record, time=moment, traceparent=traceparent)
    await _append_timeline(uow, event.subject, event, "emitted", SERVICE_NAME, summary)


_ADD_TO_TIMELINE = insert(order_timeline)


async def _append_timeline(
    uow: UnitOfWork,
    order_id: str,
    event: Event[records.Record],
    direction: str,
    source: str,
    summary: str,
) -> None:
    await uow.session.execute(
        _ADD_TO_TIMELINE,
        {
            "order_id": order_id,
            "event_id": event.id,
            "event_type": event.type,
            "direction": direction,
            "source": source,
            "occurred_at": event.time,
            "summary": summary,
        },
    )


_LOCK_ORDER = select(orders).where(orders.c.id == bindparam("order_id")).with_for_update()


async def _lock(uow: UnitOfWork, order_id: str) -> Row | None:
    result = await uow.session.execute(_LOCK_ORDER, {"order_id": order_id})
    return result.first()


_ORDER_BY_KEY = select(orders.c.id, orders.c.request_hash).where(
    orders.c.user_id == bindparam("user_id"), orders.c.idempotency_key == bindparam("key")
)


async def _order_by_key(uow: UnitOfWork, user_id: str, key: str) -> Row | None:
    result = await uow.session.execute(_ORDER_BY_KEY, {"user_id": user_id, "key": key})
    return result.first()


def _replay(earlier: Row, fingerprint: str) -> str:
    """The id of the order an earlier request with the same key made, if it asked the same."""
    if earlier.request_hash != fingerprint:
        raise IdempotencyKeyReusedError
    return str(earlier.id)


def _state_of(order: Row) -> OrderState:
    reason = CancelReason(order.cancel_reason) if order.cancel_reason else None
    return OrderState(OrderStatus(order.status), reason, order.charged)


def _source_name(source: str) -> str:
    """`/inventory_service` -> `inventory_service` (CloudEvents sources are URI references)."""
    return source.strip("/") or "unknown"


def _order_created(
    order_id: str,
    command: PlaceOrder,
    priced: PricedOrder,
    deadline: datetime,
    created_at: datetime,
) -> records.OrderCreated:
    return records.OrderCreated(
        order_id=order_id,
        user_id=command.user_id,
        items=tuple(
            records.OrderLine(
                product_id=line.product_id, quantity=line.quantity, unit_price=line.unit_price
            )
            for line in priced.lines
        ),
        total_amount=priced.total,
        currency=priced.currency,
        payment_method_id=command.payment_method_id,
        deadline=deadline,
        created_at=created_at,
        client_ip=command.client_ip,
    )


def _record_of(emitted: Emitted, order: Row, moment: datetime) -> records.Record:
    if isinstance(emitted, OrderConfirmed):
        return records.OrderConfirmed(
            order_id=str(order.id),
            user_id=str(order.user_id),
            total_amount=order.total_amount,
            currency=order.currency,
            confirmed_at=moment,
        )
    return records.OrderCancelled(
        order_id=str(order.id),
        user_id=str(order.user_id),
        reason=emitted.reason.value,
        previous_status=emitted.previous_status.value,
        charged=emitted.charged,
        cancelled_at=moment,
    )


def _created_summary(priced: PricedOrder) -> str:
    return f"order placed: {len(priced.lines)} line(s), total {priced.total} {priced.currency}"


def _emitted_summary(emitted: Emitted, order: Row) -> str:
    if isinstance(emitted, OrderCancelled):
        charged = "charged" if emitted.charged else "not charged"
        return f"order cancelled ({emitted.reason}) from {emitted.previous_status}, {charged}"
    return f"order confirmed: {order.total_amount} {order.currency}"
