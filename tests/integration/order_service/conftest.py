"""Order service fixtures: a stand-in inventory price lookup, saga events, polling helpers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from choreo import records
from choreo.events import Event
from choreo.testing import free_port, serving
from choreo.testing import records as make


class StandInInventory:
    """Serves only the inventory service's `POST /api/v1/products/lookup`, from `products`
    (`test_stand_in_inventory.py` holds it to the real one's answers)."""

    def __init__(self) -> None:
        self.products: dict[str, dict[str, Any]] = {}
        # Seconds each lookup takes: lets concurrent order requests all get past their checks.
        self.lookup_delay = 0.0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = contextlib.AsyncExitStack()

    def add(self, name: str, price: int, currency: str = "USD") -> str:
        product_id = str(uuid.uuid4())
        self.products[product_id] = {"name": name, "price": price, "currency": currency}
        return product_id

    async def _lookup(self, request: Request) -> JSONResponse:
        ids = (await request.json())["ids"]
        await asyncio.sleep(self.lookup_delay)
        known = [i for i in ids if i in self.products]
        return JSONResponse(
            {
                "items": [{"id": i, **self.products[i], "available": 10} for i in known],
                "missing": [i for i in ids if i not in self.products],
            }
        )

    async def start(self) -> None:
        app = Starlette(routes=[Route("/api/v1/products/lookup", self._lookup, methods=["POST"])])
        await self._server.enter_async_context(serving(app, port=self.port))

    async def stop(self) -> None:
        await self._server.aclose()


@pytest_asyncio.fixture
async def inventory() -> AsyncIterator[StandInInventory]:
    stand_in = StandInInventory()
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


def stock_reserved(order: dict[str, Any]) -> Event[records.StockReserved]:
    lines = [
        records.StockLine(product_id=i["product_id"], quantity=i["quantity"])
        for i in order["items"]
    ]
    return make.stock_reserved(order_id=order["id"], items=lines)


def stock_rejected(order: dict[str, Any]) -> Event[records.StockRejected]:
    return make.stock_rejected(
        order_id=order["id"],
        reason="OUT_OF_STOCK",
        unavailable_product_ids=[order["items"][0]["product_id"]],
    )


def payment_succeeded(order: dict[str, Any]) -> Event[records.PaymentSucceeded]:
    return make.payment_succeeded(
        order_id=order["id"], amount=order["total"], currency=order["currency"]
    )


def payment_failed(order: dict[str, Any]) -> Event[records.PaymentFailed]:
    return make.payment_failed(
        order_id=order["id"], amount=order["total"], currency=order["currency"]
    )


async def wait_for(
    api: httpx.AsyncClient,
    path: str,
    condition: Callable[[dict[str, Any]], bool],
    *,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """GET `path` until its JSON body meets `condition`; the body that did."""
    body: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                response = await api.get(path)
                assert response.status_code == 200, response.text
                body = response.json()
                if condition(body):
                    return body
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{path} did not get there in {timeout} s; last: {body}") from None


async def wait_for_status(
    api: httpx.AsyncClient, order_id: str, status: str, *, timeout: float = 30.0
) -> dict[str, Any]:
    return await wait_for(
        api, f"/api/v1/orders/{order_id}", lambda o: o["status"] == status, timeout=timeout
    )


def timeline_types(timeline: dict[str, Any]) -> list[str]:
    return [entry["type"] for entry in timeline["items"]]


async def wait_for_timeline(
    api: httpx.AsyncClient, order_id: str, event_type: str, *, timeout: float = 30.0
) -> dict[str, Any]:
    """The order's timeline once it holds an event of `event_type`."""
    return await wait_for(
        api,
        f"/api/v1/orders/{order_id}/timeline",
        lambda t: event_type in timeline_types(t),
        timeout=timeout,
    )
