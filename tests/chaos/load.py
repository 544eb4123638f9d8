"""Orders through the gateway, as customers place them, at a steady rate, whatever breaks.

Customers hold good or declined cards; some products have a few units only, so some orders
are declined and some run out of stock. Every order is placed with an `Idempotency-Key` and
retried until the gateway takes it (a killed gateway, a 503 from a restarting service), so an
outage delays orders but never doubles them. The longest span in which no request succeeded is
the longest the public API was unavailable.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000341"
_RETRIABLE_STATUSES = {429, 500, 502, 503, 504}


@dataclass
class Customer:
    email: str
    token: str


@dataclass
class Availability:
    """When requests stopped and started succeeding again (monotonic seconds)."""

    down_since: float | None = None
    longest_down: float = 0.0
    failed_requests: int = 0

    def succeeded(self) -> None:
        if self.down_since is not None:
            self.longest_down = max(self.longest_down, time.monotonic() - self.down_since)
            self.down_since = None

    def failed(self) -> None:
        self.failed_requests += 1
        if self.down_since is None:
            self.down_since = time.monotonic()


@dataclass
class Load:
    """Customers and products made through the gateway, and the orders placed so far."""

    api: str
    seed: int = 0
    orders: list[str] = field(default_factory=list)
    availability: Availability = field(default_factory=Availability)
    customers: list[Customer] = field(default_factory=list)
    products: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._chance = random.Random(self.seed)
        self._client = httpx.AsyncClient(base_url=self.api, timeout=30.0)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        patience: float = 120.0,
        **kw: Any,
    ) -> httpx.Response:
        """Send until the answer is not an outage (connection refused, 5xx, 429), for up to
        `patience` seconds; the last answer, whatever it is."""
        headers = {
            **kw.pop("headers", {}),
            **({"Authorization": f"Bearer {token}"} if token else {}),
        }
        deadline = time.monotonic() + patience
        while True:
            try:
                response = await self._client.request(method, path, headers=headers, **kw)
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code not in _RETRIABLE_STATUSES:
                self.availability.succeeded()
                return response
            self.availability.failed()
            if time.monotonic() > deadline:
                if response is None:
                    raise TimeoutError(f"{method} {path}: no answer in {patience:.0f} s")
                return response
            await asyncio.sleep(0.5)

    async def set_up(
        self, admin: tuple[str, str], *, customers: int, declined_share: float = 0.2
    ) -> None:
        """Products (six plentiful, two with 3 units) and customers with cards."""
        login = await self.request("POST", "/auth/login", json=_credentials(*admin))
        assert login.status_code == 200, login.text
        admin_token = login.json()["access_token"]
        for number, stock in enumerate([10_000] * 6 + [3, 3]):
            created = await self.request(
                "POST",
                "/products",
                token=admin_token,
                json={
                    "name": f"Chaos part {number}",
                    "description": "",
                    "category": "chaos",
                    "price": 500 + 100 * number,
                    "currency": "USD",
                    "stock": stock,
                    "low_stock_threshold": 0,
                },
            )
            assert created.status_code == 201, created.text
            self.products.append(created.json()["id"])
        made = await asyncio.gather(
            *(
                self._customer(DECLINED_CARD if n < customers * declined_share else GOOD_CARD)
                for n in range(customers)
            )
        )
        self.customers.extend(made)

    async def _customer(self, card: str) -> Customer:
        email = f"chaos-{uuid.uuid4().hex[:10]}@example.com"
        password = "correct horse battery"
        registered = await self.request(
            "POST",
            "/auth/register",
            json={"email": email, "password": password, "full_name": "Chaos Customer"},
        )
        # 409: an earlier try was registered, though its answer was lost to the outage.
        assert registered.status_code in (201, 409), registered.text
        login = await self.request("POST", "/auth/login", json=_credentials(email, password))
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        card_data = {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"}
        saved = await self.request(
            "POST", "/payment-methods", token=token, json={"card": card_data}
        )
        assert saved.status_code == 201, saved.text
        return Customer(email, token)

    async def place(self, count: int, rate: float) -> None:
        """Place `count` orders, `rate` per second, each retried until the gateway takes it."""
        placing: list[asyncio.Task[None]] = []
        started = time.monotonic()
        for number in range(count):
            await asyncio.sleep(max(0.0, started + number / rate - time.monotonic()))
            placing.append(asyncio.create_task(self._order()))
        await asyncio.gather(*placing)

    async def _order(self) -> None:
        customer = self._chance.choice(self.customers)
        lines = self._chance.sample(self.products, self._chance.choice([1, 1, 2]))
        items = [{"product_id": p, "quantity": self._chance.choice([1, 1, 2])} for p in lines]
        response = await self.request(
            "POST",
            "/orders",
            token=customer.token,
            headers={"Idempotency-Key": str(uuid.uuid4())},
            json={"items": items},
            patience=300.0,
        )
        assert response.status_code == 202, response.text
        self.orders.append(response.json()["id"])


def _credentials(email: str, password: str) -> dict[str, str]:
    return {"email": email, "password": password}
