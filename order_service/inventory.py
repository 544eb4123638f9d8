"""The inventory service as the order service uses it: current prices of products, over HTTP.

One pooled `httpx.AsyncClient` (made in main.py) serves every request. Connection failures and
5xx answers are retried with backoff; what still fails is `InventoryUnavailableError`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import httpx
from pydantic import BaseModel, Field, ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from choreo.errors import ChoreoError, RetriableError
from order_service.domain import Product

LOOKUP_PATH = "/api/v1/products/lookup"
TIMEOUT_SECONDS = 2.0
MAX_UNIT_PRICE = 10**12

# Failures that say nothing about the request itself: the next attempt may well succeed. A read
# timeout is not among them: the lookup may be slow under load, and a retry would add to it.
_RETRIABLE = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


class InventoryUnavailableError(RetriableError):
    """The inventory service could not be reached, or failed: try again later."""


class InventoryProtocolError(ChoreoError):
    """The inventory service answered something the order service cannot use."""


class _ServerError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"inventory answered {response.status_code}")


class _LookupItem(BaseModel):
    id: uuid.UUID
    name: str
    # Bounded so that 50 lines of 100 units stay far inside a bigint (and an Avro long).
    price: int = Field(ge=0, le=MAX_UNIT_PRICE)
    currency: str = Field(min_length=3, max_length=3)


class _LookupAnswer(BaseModel):
    items: list[_LookupItem]


def http_client(base_url: str) -> httpx.AsyncClient:
    """The pooled client to the inventory service; whoever makes it closes it."""
    return httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT_SECONDS)


class InventoryClient:
    """Looks products up in the inventory service's catalog."""

    def __init__(
        self, http: httpx.AsyncClient, *, attempts: int = 3, backoff_seconds: float = 0.1
    ) -> None:
        self._http = http
        self._attempts = attempts
        self._backoff_seconds = backoff_seconds

    async def aclose(self) -> None:
        await self._http.aclose()

    async def lookup(
        self, product_ids: Sequence[str], *, authorization: str | None = None
    ) -> dict[str, Product]:
        """The products among `product_ids` the catalog knows (unknown or deleted ones are left
        out), by id. `authorization` is the caller's, passed on so the lookup runs as them.
        """
        headers = {"Authorization": authorization} if authorization else {}
        try:
            response = await self._post({"ids": list(product_ids)}, headers)
        except (httpx.TransportError, _ServerError) as error:
            raise InventoryUnavailableError(
                f"the inventory service is unavailable ({_describe(error)})"
            ) from error
        if response.status_code != httpx.codes.OK:
            raise InventoryProtocolError(
                f"the inventory service refused the price lookup ({response.status_code})"
            )
        try:
            answer = _LookupAnswer.model_validate_json(response.content)
        except ValidationError as error:
            raise InventoryProtocolError(
                f"the inventory service's price lookup answer is not usable: {error.error_count()} "
                "problem(s)"
            ) from error
        wanted = set(product_ids)
        products = (
            Product(str(item.id), item.name, item.price, item.currency.upper())
            for item in answer.items
        )
        return {product.id: product for product in products if product.id in wanted}

    async def _post(self, body: dict[str, list[str]], headers: dict[str, str]) -> httpx.Response:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((*_RETRIABLE, _ServerError)),
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=self._backoff_seconds, max=1.0),
            reraise=True,
        ):
            with attempt:
                response = await self._http.post(LOOKUP_PATH, json=body, headers=headers)
                if response.status_code >= httpx.codes.INTERNAL_SERVER_ERROR:
                    raise _ServerError(response)
                return response
        raise AssertionError("unreachable: tenacity re-raises the last failure")


def _describe(error: Exception) -> str:
    return str(error) or type(error).__name__
