"""The inventory service's handlers applied straight to its database (`choreo.testing.apply`:
the inbox and the handler in one transaction, as the consumer does, without a broker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio
from sqlalchemy import select

from choreo.migrate import migrate
from choreo.records import OrderLine
from choreo.service import Service
from choreo.testing import apply
from choreo.testing import records as make
from inventory_service import handlers
from inventory_service.config import Settings
from inventory_service.main import build
from inventory_service.tables import products, reservations


@pytest_asyncio.fixture
async def inventory(database_url: str) -> AsyncIterator[Service]:
    await asyncio.to_thread(migrate, "inventory", database_url)
    service = build(Settings(database_url=database_url))
    yield service
    await service.aclose()


async def stocked(service: Service, units: int) -> str:
    new = handlers.NewProduct(
        name="Burr grinder",
        description="",
        category="coffee",
        price=8900,
        currency="USD",
        stock=units,
        low_stock_threshold=0,
        features=[],
        image_url=None,
    )
    return await handlers.create_product(
        service.unit_of_work()(), new, actor_id="admin", traceparent=None
    )


async def counters(service: Service, product_id: str) -> tuple[int, int, int]:
    async with service.unit_of_work()() as uow:
        row = (
            await uow.session.execute(
                select(products.c.available, products.c.reserved, products.c.sold).where(
                    products.c.id == product_id
                )
            )
        ).one()
    return (row.available, row.reserved, row.sold)


async def test_an_order_is_reserved_once_and_released_on_cancellation(
    inventory: Service,
) -> None:
    grinder = await stocked(inventory, 10)
    created = make.order_created(items=[OrderLine(product_id=grinder, quantity=3, unit_price=8900)])
    order_id = created.record.order_id

    assert await apply(inventory, created, created) == [True, False]
    assert await counters(inventory, grinder) == (7, 3, 0)

    cancelled = make.order_cancelled(order_id=order_id, reason="CUSTOMER_REQUEST")
    assert await apply(inventory, cancelled) == [True]
    assert await counters(inventory, grinder) == (10, 0, 0)
    async with inventory.unit_of_work()() as uow:
        status = await uow.session.scalar(
            select(reservations.c.status).where(reservations.c.order_id == order_id)
        )
    assert status == "RELEASED"
