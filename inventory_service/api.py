"""The inventory service's HTTP API: the catalog (public reads, admin writes) and stock.

Routes parse and validate, call a handler (which opens its unit of work) or a query, and answer
with the query's view; domain errors are mapped to statuses in ERROR_STATUSES. Admins also see
`reserved` and `sold`.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final, Self

from fastapi import APIRouter, Query, Response, status
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    UrlConstraints,
    model_validator,
)

from choreo.auth import Principal
from choreo.deps import AdminUser, OptionalUser, Uow
from choreo.pagination import InvalidCursorError
from choreo.web import ApiError, current_traceparent
from inventory_service import handlers, queries
from inventory_service.domain import (
    MAX_UNITS,
    InsufficientStockError,
    InvalidQuantityError,
    ProductNotFoundError,
    StockLimitError,
)
from inventory_service.handlers import NewProduct
from inventory_service.queries import (
    AdminProductView,
    LookupResult,
    ProductFilter,
    ProductPage,
    ProductView,
)

# Prices are minor units; a bound keeps order totals (quantity x price) far from overflow.
MAX_PRICE = 10**12

# Domain errors whose message says it all; main.py hands these to the kit's error handler.
ERROR_STATUSES: Final[dict[type[Exception], tuple[int, str]]] = {
    ProductNotFoundError: (404, "product_not_found"),
    InsufficientStockError: (409, "insufficient_stock"),
    StockLimitError: (409, "stock_limit_exceeded"),
    InvalidQuantityError: (422, "validation_error"),
    InvalidCursorError: (422, "invalid_cursor"),
}


def _storable(value: str) -> str:
    """PostgreSQL text holds neither NUL nor lone surrogates: refuse them here, not with a 500."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


_Storable = AfterValidator(_storable)


def _length(min_length: int, max_length: int) -> StringConstraints:
    return StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length)


Name = Annotated[str, _length(1, 200), _Storable]
Description = Annotated[str, _length(0, 5000), _Storable]
Category = Annotated[str, _length(1, 100), _Storable]
Feature = Annotated[str, _length(1, 200), _Storable]
Reason = Annotated[str, _length(1, 500), _Storable]
SearchText = Annotated[str, _length(0, 200), _Storable]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Price = Annotated[int, Field(strict=True, gt=0, le=MAX_PRICE)]
Units = Annotated[int, Field(strict=True, ge=0, le=MAX_UNITS)]
Features = Annotated[list[Feature], Field(max_length=50)]
ImageUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=2000)]


class ProductCreate(BaseModel):
    """A new product. `features` is a list of short strings (e.g. ["15 bar", "1.8 l tank"])."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Description = ""
    category: Category
    price: Price
    currency: Currency = "USD"
    stock: Units = 0
    low_stock_threshold: Units = 5
    features: Features = []
    image_url: ImageUrl | None = None


class ProductUpdate(BaseModel):
    """Catalog fields to change; absent ones stay. Stock changes go through /stock."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Description | None = None
    category: Category | None = None
    price: Price | None = None
    currency: Currency | None = None
    low_stock_threshold: Units | None = None
    features: Features | None = None
    image_url: ImageUrl | None = None

    @model_validator(mode="after")
    def _only_image_url_may_be_null(self) -> Self:
        nulls = [f for f in self.model_fields_set if f != "image_url" and getattr(self, f) is None]
        if nulls:
            raise ValueError(f"{', '.join(sorted(nulls))} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        values = self.model_dump(exclude_unset=True)
        if values.get("image_url") is not None:
            values["image_url"] = str(self.image_url)
        return values


class StockChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delta: Annotated[int, Field(strict=True, ge=-MAX_UNITS, le=MAX_UNITS)]
    reason: Reason | None = None

    @model_validator(mode="after")
    def _delta_not_zero(self) -> Self:
        if self.delta == 0:
            raise ValueError("delta must not be zero")
        return self


class LookupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=100)]


router = APIRouter(prefix="/api/v1", tags=["products"])


def _seen_by(product: ProductView, viewer: Principal | None) -> ProductView:
    return product if viewer is not None and viewer.is_admin else product.public()


@router.post("/products", status_code=status.HTTP_201_CREATED)
async def create_product(
    body: ProductCreate, admin: AdminUser, uow: Uow, response: Response
) -> AdminProductView:
    new = NewProduct(
        **body.model_dump(exclude={"image_url"}),
        image_url=None if body.image_url is None else str(body.image_url),
    )
    product_id = await handlers.create_product(
        uow, new, actor_id=admin.user_id, traceparent=current_traceparent()
    )
    response.headers["Location"] = f"{router.prefix}/products/{product_id}"
    return await queries.get_product(uow, product_id)


@router.get("/products")
async def list_products(
    uow: Uow,
    viewer: OptionalUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    category: Annotated[Category | None, Query()] = None,
    q: Annotated[SearchText | None, Query()] = None,
    min_price: Annotated[int | None, Query(ge=0, le=MAX_PRICE)] = None,
    max_price: Annotated[int | None, Query(ge=0, le=MAX_PRICE)] = None,
) -> ProductPage:
    if min_price is not None and max_price is not None and min_price > max_price:
        raise ApiError(422, "validation_error", "min_price is greater than max_price")
    criteria = ProductFilter(category=category, q=q, min_price=min_price, max_price=max_price)
    page = await queries.list_products(uow, criteria, limit=limit, cursor=cursor)
    return ProductPage([_seen_by(p, viewer) for p in page.items], page.next_cursor)


@router.post("/products/lookup")
async def lookup_products(body: LookupRequest, uow: Uow) -> LookupResult:
    """Name, price and available stock of products by id, for pricing orders (public)."""
    return await queries.lookup_products(uow, [str(i) for i in body.ids])


@router.get("/products/{product_id}")
async def get_product(
    product_id: uuid.UUID, uow: Uow, viewer: OptionalUser
) -> AdminProductView | ProductView:
    return _seen_by(await queries.get_product(uow, str(product_id)), viewer)


@router.patch("/products/{product_id}")
async def update_product(
    product_id: uuid.UUID, body: ProductUpdate, admin: AdminUser, uow: Uow
) -> AdminProductView:
    await handlers.update_product(uow, str(product_id), body.changes())
    return await queries.get_product(uow, str(product_id))


@router.delete("/products/{product_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_product(product_id: uuid.UUID, admin: AdminUser, uow: Uow) -> Response:
    await handlers.delete_product(uow, str(product_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/products/{product_id}/stock")
async def adjust_stock(
    product_id: uuid.UUID, body: StockChange, admin: AdminUser, uow: Uow
) -> AdminProductView:
    """Add (delta > 0) or remove (delta < 0) available units; 409 if it would go negative."""
    await handlers.adjust_stock(
        uow,
        str(product_id),
        body.delta,
        reason=body.reason,
        actor_id=admin.user_id,
        traceparent=current_traceparent(),
    )
    return await queries.get_product(uow, str(product_id))
