"""Reads of orders and their timelines, as the API shows them; pages newest first, with
`choreo.pagination` cursors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from pydantic import Field
from sqlalchemy import and_, or_, select

from choreo.db import UnitOfWork
from choreo.pagination import decode_cursor, split_page
from choreo.sql import Row
from order_service.domain import CancelReason, OrderNotFoundError, OrderStatus
from order_service.handlers import NewOrder
from order_service.tables import order_items, order_payment_actions, order_timeline, orders


@dataclass(frozen=True)
class OrderItemView:
    product_id: str
    name: str
    quantity: int
    unit_price: int
    line_total: int


@dataclass(frozen=True)
class PaymentActionView:
    """What the customer's client needs to authenticate the order's payment (3-D Secure):
    Stripe.js `stripe.handleNextAction({clientSecret})` (or a mobile SDK) with the shop's
    publishable key runs the challenge; with `redirect_url`, the customer may be sent there."""

    type: Annotated[str, Field(description="Stripe's next_action.type, e.g. use_stripe_sdk")]
    provider_payment_id: Annotated[str, Field(description="The PaymentIntent (pi_...)")]
    client_secret: Annotated[
        str, Field(description="The PaymentIntent's client secret, for this customer only")
    ]
    redirect_url: str | None
    required_at: datetime


@dataclass(frozen=True)
class OrderView:
    id: str
    user_id: str
    status: OrderStatus
    cancel_reason: CancelReason | None
    charged: Annotated[
        bool,
        Field(
            description="Whether a payment for the order ever succeeded. It stays true when a "
            "charged order is cancelled: the payment service then refunds it (the refund shows "
            "in GET /payments as `refunded_amount`)."
        ),
    ]
    items: list[OrderItemView]
    total: int
    currency: str
    payment_method_id: str | None
    created_at: datetime
    updated_at: datetime
    deadline: datetime
    payment_action: Annotated[
        PaymentActionView | None,
        Field(
            description="While the order is AWAITING_PAYMENT_ACTION, shown to its customer "
            "only: what their client needs to authenticate the payment (3-D Secure)."
        ),
    ] = None


@dataclass(frozen=True)
class OrderPage:
    items: list[OrderView]
    next_cursor: str | None


@dataclass(frozen=True)
class TimelineEntry:
    type: str
    event_id: str
    time: datetime
    source: str
    direction: str
    summary: str


@dataclass(frozen=True)
class Timeline:
    order_id: str
    items: list[TimelineEntry]


async def get_order(uow: UnitOfWork, order_id: str, *, user_id: str | None) -> OrderView:
    """`user_id`'s order `order_id` (anyone else's is not found); anyone's when None."""
    query = select(orders).where(orders.c.id == order_id)
    if user_id is not None:
        query = query.where(orders.c.user_id == user_id)
    async with uow:
        row = (await uow.session.execute(query)).first()
        if row is None:
            raise OrderNotFoundError(order_id)
        return (await _views(uow, [row], for_customer=user_id is not None))[0]


async def list_orders(
    uow: UnitOfWork,
    *,
    limit: int,
    cursor: str | None = None,
    user_id: str | None = None,
    status: OrderStatus | None = None,
) -> OrderPage:
    """Orders newest first, of one user and/or in one status when given."""
    query = select(orders).order_by(orders.c.created_at.desc(), orders.c.id.desc())
    if user_id is not None:
        query = query.where(orders.c.user_id == user_id)
    if status is not None:
        query = query.where(orders.c.status == status.value)
    if cursor is not None:
        created_at, order_id = decode_cursor(cursor)
        query = query.where(
            or_(
                orders.c.created_at < created_at,
                and_(orders.c.created_at == created_at, orders.c.id < order_id),
            )
        )
    async with uow:
        rows = (await uow.session.execute(query.limit(limit + 1))).all()
        page, next_cursor = split_page(rows, limit, lambda row: (row.created_at, row.id))
        views = await _views(uow, page, for_customer=user_id is not None)
    return OrderPage(views, next_cursor)


async def get_timeline(uow: UnitOfWork, order_id: str, *, user_id: str) -> Timeline:
    """Every event consumed or emitted for `user_id`'s order, in the order it happened here."""
    async with uow:
        owner = await uow.session.execute(
            select(orders.c.id).where(orders.c.id == order_id, orders.c.user_id == user_id)
        )
        if owner.first() is None:
            raise OrderNotFoundError(order_id)
        rows = await uow.session.execute(
            select(order_timeline)
            .where(order_timeline.c.order_id == order_id)
            .order_by(order_timeline.c.id)
        )
        entries = [
            TimelineEntry(
                type=row.event_type,
                event_id=row.event_id,
                time=row.occurred_at.astimezone(UTC),
                source=row.source,
                direction=row.direction,
                summary=row.summary,
            )
            for row in rows
        ]
    return Timeline(order_id, entries)


def new_order_view(new: NewOrder) -> OrderView:
    """The order `place_order` just wrote, as `get_order` would read it back (PENDING): built
    from what was written rather than read again, a transaction less per order (issue 14)."""
    return OrderView(
        id=new.order_id,
        user_id=new.user_id,
        status=OrderStatus.PENDING,
        cancel_reason=None,
        charged=False,
        items=[
            OrderItemView(
                product_id=line.product_id,
                name=line.name,
                quantity=line.quantity,
                unit_price=line.unit_price,
                line_total=line.line_total,
            )
            for line in new.priced.lines
        ],
        total=new.priced.total,
        currency=new.priced.currency,
        payment_method_id=new.payment_method_id,
        created_at=new.created_at.astimezone(UTC),
        updated_at=new.created_at.astimezone(UTC),
        deadline=new.deadline.astimezone(UTC),
    )


async def _views(
    uow: UnitOfWork, rows: Sequence[Row], *, for_customer: bool = False
) -> list[OrderView]:
    """The orders' views; `for_customer`: their customer reads them (a payment action, whose
    client secret is theirs only, is shown)."""
    if not rows:
        return []
    actions = {}
    waiting = [row.id for row in rows if row.status == OrderStatus.AWAITING_PAYMENT_ACTION]
    if for_customer and waiting:
        found = await uow.session.execute(
            select(order_payment_actions).where(order_payment_actions.c.order_id.in_(waiting))
        )
        actions = {
            str(action.order_id): PaymentActionView(
                type=action.next_action_type,
                provider_payment_id=action.provider_payment_id,
                client_secret=action.client_secret,
                redirect_url=action.redirect_url,
                required_at=action.required_at.astimezone(UTC),
            )
            for action in found
        }
    lines = await uow.session.execute(
        select(order_items)
        .where(order_items.c.order_id.in_([row.id for row in rows]))
        .order_by(order_items.c.order_id, order_items.c.line_number)
    )
    items: dict[str, list[OrderItemView]] = {str(row.id): [] for row in rows}
    for line in lines:
        items[str(line.order_id)].append(
            OrderItemView(
                product_id=str(line.product_id),
                name=line.name,
                quantity=line.quantity,
                unit_price=line.unit_price,
                line_total=line.quantity * line.unit_price,
            )
        )
    return [
        OrderView(
            id=str(row.id),
            user_id=str(row.user_id),
            status=OrderStatus(row.status),
            cancel_reason=CancelReason(row.cancel_reason) if row.cancel_reason else None,
            charged=row.charged,
            items=items[str(row.id)],
            total=row.total_amount,
            currency=row.currency,
            payment_method_id=row.payment_method_id,
            created_at=row.created_at.astimezone(UTC),
            updated_at=row.updated_at.astimezone(UTC),
            deadline=row.deadline.astimezone(UTC),
            payment_action=actions.get(str(row.id)),
        )
        for row in rows
    ]
