"""The inventory client's retries and answers, over an in-memory HTTP transport."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

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


def client(
    answers: list[Callable[[httpx.Request], httpx.Response]],
) -> tuple[InventoryClient, list[httpx.Request]]:
    """A client whose n-th request gets `answers[n]`; also the requests it made."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[len(seen) - 1](request)

    http = httpx.AsyncClient(base_url="http://inventory", transport=httpx.MockTransport(handle))
    return InventoryClient(http, backoff_seconds=0.001), seen


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=ANSWER)


def unavailable(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json={"error": {"code": "not_ready"}})


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


async def test_lookup_prices_known_products_and_leaves_out_missing_ones() -> None:
    inventory, seen = client([ok])
    products = await inventory.lookup([MUG, GONE], authorization="Bearer t")
    assert products == {MUG: Product(MUG, "Mug", 1250, "USD")}
    assert seen[0].url.path == LOOKUP_PATH
    assert json.loads(seen[0].content) == {"ids": [MUG, GONE]}
    assert seen[0].headers["authorization"] == "Bearer t"


async def test_connection_errors_and_5xx_are_retried() -> None:
    inventory, seen = client([refused, unavailable, ok])
    assert MUG in await inventory.lookup([MUG])
    assert len(seen) == 3


async def test_three_failures_make_inventory_unavailable() -> None:
    inventory, seen = client([unavailable, refused, unavailable, ok])
    with pytest.raises(InventoryUnavailableError) as failed:
        await inventory.lookup([MUG])
    assert len(seen) == 3
    assert failed.value.retriable


async def test_a_read_timeout_is_not_retried() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    inventory, seen = client([slow, ok])
    with pytest.raises(InventoryUnavailableError):
        await inventory.lookup([MUG])
    assert len(seen) == 1


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(401, json={"error": {"code": "unauthenticated"}}),
        httpx.Response(200, json={"items": [{"id": MUG, "name": "Mug", "price": -1}]}),
        httpx.Response(200, text="<html>"),
    ],
)
async def test_an_unusable_answer_is_not_retried(response: httpx.Response) -> None:
    inventory, seen = client([lambda request: response, ok])
    with pytest.raises(InventoryProtocolError):
        await inventory.lookup([MUG])
    assert len(seen) == 1
