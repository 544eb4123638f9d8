"""Read side of the catalog: one product, a filtered page of products, a batch lookup.

Pages are keyset-paginated on (created_at, id), oldest first, with `choreo.pagination` cursors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from choreo.pagination import decode_cursor, split_page
from inventory_service.domain import ProductNotFoundError
from inventory_service.tables import products


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    description: str
    category: str
    price: int
    currency: str
    available: int
    reserved: int
    sold: int
    low_stock_threshold: int
    features: list[str]
    image_url: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ProductFilter:
    """What a catalog listing narrows to; None leaves a criterion out."""

    category: str | None = None
    q: str | None = None
    min_price: int | None = None
    max_price: int | None = None


async def get_product(session: AsyncSession, product_id: str) -> Product:
    """The product, unless it is missing or deleted (ProductNotFoundError)."""
    rows = await session.execute(_on_sale().where(products.c.id == product_id))
    row = rows.first()
    if row is None:
        raise ProductNotFoundError(f"no product {product_id}")
    return _product(row)


async def list_products(
    session: AsyncSession, criteria: ProductFilter, *, limit: int, cursor: str | None
) -> tuple[list[Product], str | None]:
    """One page of products on sale matching `criteria`, and the cursor of the next (or None)."""
    query = _on_sale()
    if criteria.category is not None:
        query = query.where(func.lower(products.c.category) == func.lower(criteria.category))
    if criteria.q:
        pattern = f"%{_escape_like(criteria.q)}%"
        query = query.where(
            or_(
                products.c.name.ilike(pattern, escape="\\"),
                products.c.description.ilike(pattern, escape="\\"),
            )
        )
    if criteria.min_price is not None:
        query = query.where(products.c.price >= criteria.min_price)
    if criteria.max_price is not None:
        query = query.where(products.c.price <= criteria.max_price)
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(tuple_(products.c.created_at, products.c.id) > (created_at, last_id))
    rows = await session.execute(
        query.order_by(products.c.created_at, products.c.id).limit(limit + 1)
    )
    fetched = [_product(row) for row in rows]
    return split_page(fetched, limit, lambda product: (product.created_at, product.id))


async def lookup_products(
    session: AsyncSession, product_ids: Sequence[str]
) -> tuple[list[Product], list[str]]:
    """The products on sale among `product_ids` (in the order asked), and the ids that are not."""
    wanted = list(dict.fromkeys(product_ids))
    rows = await session.execute(_on_sale().where(products.c.id.in_(wanted)))
    found = {row.id: _product(row) for row in rows}
    return (
        [found[i] for i in wanted if i in found],
        [i for i in wanted if i not in found],
    )


def _on_sale() -> Select[Any]:
    return select(products).where(products.c.deleted_at.is_(None))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _product(row: Row[Any]) -> Product:
    return Product(
        id=row.id,
        name=row.name,
        description=row.description,
        category=row.category,
        price=row.price,
        currency=row.currency,
        available=row.available,
        reserved=row.reserved,
        sold=row.sold,
        low_stock_threshold=row.low_stock_threshold,
        features=list(row.features),
        image_url=row.image_url,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
