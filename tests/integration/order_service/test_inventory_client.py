"""The inventory client's retries and answers, against a loopback HTTP server that answers each
request as the test says."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from order_service.domain import Product
from order_service.inventory import (
    LOOKUP_PATH,
    InventoryClient,
    InventoryProtocolError,
    InventoryUnavailableError,
)

MUG = "00000000-0000-4000-8000-000000000001"
GONE = "00000000-0000-4000-8000-000000000002"
ANSWER = {
    "items": [{"id": MUG, "name": "Mug", "price": 1250, "currency": "USD", "available": 3}],
    "missing": [GONE],
}

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def client(
    answers: list[Answer], *, timeout_seconds: float = 2.0
) -> AsyncIterator[tuple[InventoryClient, list[tuple[web.Request, bytes]]]]:
    """A client whose n-th request gets `answers[n]`; also the requests it made, with bodies."""
    seen: list[tuple[web.Request, bytes]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append((request, await request.read()))
        return await answers[len(seen) - 1](request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with TestServer(app, host="127.0.0.1") as server:
        inventory = InventoryClient(
            str(server.make_url("")), timeout_seconds=timeout_seconds, backoff_seconds=0.001
        )
        try:
            yield inventory, seen
        finally:
            await inventory.aclose()


async def ok(request: web.Request) -> web.StreamResponse:
    return web.json_response(ANSWER)


async def unavailable(request: web.Request) -> web.StreamResponse:
    return web.json_response({"error": {"code": "not_ready"}}, status=503)


async def hang_up(request: web.Request) -> web.StreamResponse:
    """The connection drops before any answer (a service restarting)."""
    assert request.transport is not None
    request.transport.close()
    return web.Response()


async def test_lookup_prices_known_products_and_leaves_out_missing_ones() -> None:
    async with client([ok]) as (inventory, seen):
        products = await inventory.lookup([MUG, GONE], authorization="Bearer t")
    assert products == {MUG: Product(MUG, "Mug", 1250, "USD")}
    request, body = seen[0]
    assert request.path == LOOKUP_PATH
    assert json.loads(body) == {"ids": [MUG, GONE]}
    assert request.headers["authorization"] == "Bearer t"


async def test_dropped_connections_and_5xx_are_retried() -> None:
    async with client([hang_up, unavailable, ok]) as (inventory, seen):
        assert MUG in await inventory.lookup([MUG])
    assert len(seen) == 3


async def test_three_failures_make_inventory_unavailable() -> None:
    async with client([unavailable, hang_up, unavailable, ok]) as (inventory, seen):
        with pytest.raises(InventoryUnavailableError) as failed:
            await inventory.lookup([MUG])
    assert len(seen) == 3
    assert failed.value.retriable


async def test_an_unreachable_service_is_unavailable() -> None:
    async with client([ok]) as (inventory, _):
        pass
    # The server is gone: nothing listens on its port any more.
    with pytest.raises(InventoryUnavailableError):
        await inventory.lookup([MUG])
    await inventory.aclose()


async def test_a_slow_answer_is_not_retried() -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(1.0)
        return await ok(request)

    async with client([slow, ok], timeout_seconds=0.2) as (inventory, seen):
        with pytest.raises(InventoryUnavailableError):
            await inventory.lookup([MUG])
    assert len(seen) == 1


def answer(status: int, text: str) -> Answer:
    async def respond(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=text, content_type="application/json")

    return respond


@pytest.mark.parametrize(
    "unusable",
    [
        answer(401, json.dumps({"error": {"code": "unauthenticated"}})),
        answer(200, json.dumps({"items": [{"id": MUG, "name": "Mug", "price": -1}]})),
        answer(200, "<html>"),
    ],
)
async def test_an_unusable_answer_is_not_retried(unusable: Answer) -> None:
    async with client([unusable, ok]) as (inventory, seen):
        with pytest.raises(InventoryProtocolError):
            await inventory.lookup([MUG])
    assert len(seen) == 1
