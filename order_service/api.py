"""The order service's HTTP API: place, read, cancel orders; admin fulfilment and listing."""

from __future__ import annotations

import functools
import ipaddress
import uuid
from datetime import date, timedelta
from typing import Annotated, Final, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from choreo.deps import AdminUser, CurrentUser, Uow, resource
from choreo.pagination import InvalidCursorError
from choreo.web import ApiError, current_traceparent
from order_service import handlers, queries
from order_service.domain import (
    MAX_LINES,
    MAX_QUANTITY,
    IdempotencyKeyReusedError,
    MixedCurrenciesError,
    OrderLine,
    OrderNotCancellableError,
    OrderNotFoundError,
    OrderStatus,
    QuantityLimitError,
    StatusChangeNotAllowedError,
    UnknownProductsError,
    merge_lines,
)
from order_service.inventory import (
    InventoryClient,
    InventoryProtocolError,
    InventoryUnavailableError,
)
from order_service.queries import OrderPage, OrderView, Timeline
from order_service.reports import Interval, InvalidReportError, Report, ReportName, make_report

RETRY_AFTER_SECONDS: Final = 5

# Domain errors whose message says it all; main.py hands these to the kit's error handler.
ERROR_STATUSES: Final[dict[type[Exception], tuple[int, str]]] = {
    OrderNotFoundError: (404, "not_found"),
    OrderNotCancellableError: (409, "not_cancellable"),
    StatusChangeNotAllowedError: (409, "invalid_status_transition"),
    IdempotencyKeyReusedError: (422, "idempotency_key_reused"),
    QuantityLimitError: (422, "quantity_limit_exceeded"),
    InvalidCursorError: (422, "invalid_cursor"),
    InventoryProtocolError: (502, "inventory_error"),
    InvalidReportError: (422, "invalid_report"),
}

router = APIRouter(prefix="/api/v1", tags=["orders"])


class OrderLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: uuid.UUID
    quantity: int = Field(ge=1, le=MAX_QUANTITY)


class PlaceOrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[OrderLineIn] = Field(min_length=1, max_length=MAX_LINES)
    # The payment service's id of a saved card (a UUID, or a provider token such as `pm_...`).
    payment_method_id: str | None = Field(
        default=None, min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.:-]+$"
    )


class StatusChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal[OrderStatus.PROCESSING, OrderStatus.COMPLETED]


async def _customer_id(principal: CurrentUser) -> str:
    """The caller's user id; every user id in this system is a UUID."""
    try:
        return str(uuid.UUID(principal.user_id))
    except ValueError:
        raise ApiError(403, "forbidden", "the token's subject is not a user id") from None


CustomerId = Annotated[str, Depends(_customer_id)]
Inventory = Annotated[InventoryClient, Depends(resource("inventory", InventoryClient))]
SagaTimeout = Annotated[timedelta, Depends(resource("saga_timeout", timedelta))]
Limit = Annotated[int, Query(ge=1, le=100)]


def _client_ip(value: str | None) -> str | None:
    """The client's address as the gateway saw it (`X-Real-IP`, which it sets on every request
    and drops from clients), in canonical form (RFC 5952); None without one or with something
    that is no address (a direct call, not through the gateway)."""
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


@router.post("/orders", status_code=202, response_model=OrderView)
async def place_order(
    body: PlaceOrderIn,
    request: Request,
    response: Response,
    user_id: CustomerId,
    uow: Uow,
    inventory: Inventory,
    saga_timeout: SagaTimeout,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> OrderView:
    """Price the order and start its saga: 202, the PENDING order, and its `Location`."""
    lines = merge_lines(OrderLine(str(line.product_id), line.quantity) for line in body.items)
    command = handlers.PlaceOrder(
        user_id=user_id,
        lines=lines,
        payment_method_id=body.payment_method_id,
        idempotency_key=idempotency_key,
        traceparent=current_traceparent(),
        client_ip=_client_ip(request.headers.get("x-real-ip")),
    )
    lookup = functools.partial(inventory.lookup, authorization=request.headers.get("authorization"))
    try:
        placed = await handlers.place_order(command, uow, lookup, saga_timeout=saga_timeout)
    except UnknownProductsError as error:
        raise ApiError(
            422, "unknown_products", str(error), {"product_ids": error.product_ids}
        ) from None
    except MixedCurrenciesError as error:
        raise ApiError(
            422, "mixed_currencies", str(error), {"currency_of": error.currency_of}
        ) from None
    except InventoryUnavailableError as error:
        raise ApiError(
            503,
            "inventory_unavailable",
            f"{error}; try again in a few seconds",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None
    response.headers["Location"] = f"/api/v1/orders/{placed.order_id}"
    if placed.new is None:  # a replay: the earlier order as it is now
        return await queries.get_order(uow, placed.order_id, user_id=user_id)
    return queries.new_order_view(placed.new)


@router.get("/orders", response_model=OrderPage)
async def list_my_orders(
    user_id: CustomerId, uow: Uow, limit: Limit = 20, cursor: str | None = None
) -> OrderPage:
    return await queries.list_orders(uow, limit=limit, cursor=cursor, user_id=user_id)


@router.get("/orders/{order_id}", response_model=OrderView)
async def get_order(order_id: uuid.UUID, user_id: CustomerId, uow: Uow) -> OrderView:
    return await queries.get_order(uow, str(order_id), user_id=user_id)


@router.get("/orders/{order_id}/timeline", response_model=Timeline)
async def get_timeline(order_id: uuid.UUID, user_id: CustomerId, uow: Uow) -> Timeline:
    """The saga's events so far, consumed and emitted, in the order they happened here."""
    return await queries.get_timeline(uow, str(order_id), user_id=user_id)


@router.post("/orders/{order_id}/cancel", status_code=202, response_model=OrderView)
async def cancel_order(order_id: uuid.UUID, user_id: CustomerId, uow: Uow) -> OrderView:
    """Cancel an order not yet in fulfilment; inventory releases and payment refunds."""
    await handlers.cancel_order(str(order_id), user_id, uow, traceparent=current_traceparent())
    return await queries.get_order(uow, str(order_id), user_id=user_id)


@router.patch("/orders/{order_id}/status", response_model=OrderView)
async def change_status(
    order_id: uuid.UUID, body: StatusChangeIn, admin: AdminUser, uow: Uow
) -> OrderView:
    await handlers.change_fulfilment_status(str(order_id), OrderStatus(body.status), uow)
    return await queries.get_order(uow, str(order_id), user_id=None)


@router.get("/admin/orders", response_model=OrderPage)
async def list_all_orders(
    admin: AdminUser,
    uow: Uow,
    limit: Limit = 20,
    cursor: str | None = None,
    status: OrderStatus | None = None,
) -> OrderPage:
    return await queries.list_orders(uow, limit=limit, cursor=cursor, status=status)


@router.get(
    "/admin/reports/{report}",
    response_model=Report,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def get_report(
    report: ReportName,
    admin: AdminUser,
    uow: Uow,
    first: Annotated[date, Query(alias="from", description="First day, included.")],
    last: Annotated[date, Query(alias="to", description="Last day, included.")],
    interval: Interval = Interval.DAY,
    tz: Annotated[str, Query(max_length=64, description="IANA time zone of the days.")] = "UTC",
    currency: Annotated[str, Query(pattern="^[A-Z]{3}$")] = "USD",
    format: Literal["json", "csv"] = "json",
) -> Report | Response:
    """One row per calendar day, ISO week or month of `tz` from `from` to `to` (a period
    without activity is a row of zeros; a day across a daylight-saving change is 23 or 25
    hours), money in minor units of `currency` (cancellations and customers count orders of
    every currency). sales: confirmed orders, gross sales, refunds
    (on the day they were made), net sales, average order value; payments: succeeded, failed,
    volume, authorisation rate; refunds; cancellations by reason; customers: new (first
    order) and returning. `format=csv` answers the same rows as CSV."""
    made = await make_report(
        uow, report, first=first, last=last, interval=interval, tz=tz, currency=currency
    )
    if format == "csv":
        filename = f"{report.value}-{first}-{last}-{interval.value}.csv"
        return Response(
            made.to_csv(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return made
