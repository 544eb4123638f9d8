"""The three saga services (inventory, payment, order) running together as processes."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from choreo.auth import SigningKey
from choreo.stack.stripe import TEST_SECRET_KEY
from choreo.testing import ServiceProcess, StartService

TERMINAL = {"CONFIRMED", "CANCELLED"}
GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000341"


@dataclass
class Saga:
    """Clients for the three services, an admin and a way to make customers."""

    inventory: ServiceProcess
    payment: ServiceProcess
    order: ServiceProcess
    signing_key: SigningKey
    stripe_api_base: str

    def token(self, user_id: str, *roles: str) -> str:
        return self.signing_key.issue(user_id, roles=roles or ("user",))

    @property
    def admin(self) -> str:
        return self.token(str(uuid.uuid4()), "admin", "user")

    async def product(self, stock: int, price: int = 1999) -> str:
        async with self.inventory.client(self.admin) as client:
            response = await client.post(
                "/api/v1/products",
                json={
                    "name": f"Widget {uuid.uuid4().hex[:6]}",
                    "description": "A widget for saga tests",
                    "category": "widgets",
                    "price": price,
                    "currency": "USD",
                    "stock": stock,
                    "low_stock_threshold": 0,
                },
            )
        assert response.status_code == 201, response.text
        product_id: str = response.json()["id"]
        return product_id

    async def available(self, product_id: str) -> int:
        async with self.inventory.client() as client:
            response = await client.get(f"/api/v1/products/{product_id}")
        assert response.status_code == 200, response.text
        available: int = response.json()["available"]
        return available

    async def customer(self, card: str = GOOD_CARD) -> str:
        """A new user with a card on file; returns their token."""
        token = self.token(str(uuid.uuid4()))
        card_data = {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"}
        async with self.payment.client(token) as client:
            response = await client.post("/api/v1/payment-methods", json={"card": card_data})
        assert response.status_code == 201, response.text
        return token

    async def place(self, token: str, lines: list[tuple[str, int]]) -> dict[str, Any]:
        items = [{"product_id": p, "quantity": q} for p, q in lines]
        async with self.order.client(token) as client:
            response = await client.post("/api/v1/orders", json={"items": items})
        assert response.status_code == 202, response.text
        order: dict[str, Any] = response.json()
        return order

    async def order_of(self, token: str, order_id: str) -> dict[str, Any]:
        async with self.order.client(token) as client:
            response = await client.get(f"/api/v1/orders/{order_id}")
        assert response.status_code == 200, response.text
        order: dict[str, Any] = response.json()
        return order

    async def settled(
        self,
        token: str,
        order_id: str,
        done: Callable[[dict[str, Any]], bool] = lambda o: o["status"] in TERMINAL,
        timeout: float = 45.0,
    ) -> dict[str, Any]:
        """Poll the order until `done(order)`; fail naming its last state."""
        order: dict[str, Any] = {}
        try:
            async with asyncio.timeout(timeout):
                while not done(order := await self.order_of(token, order_id)):
                    await asyncio.sleep(0.2)
        except TimeoutError:
            pytest.fail(f"order {order_id} did not settle in {timeout} s; last: {order}")
        return order

    async def payment_intents(self, order_id: str) -> list[dict[str, Any]]:
        """Every PaymentIntent localstripe holds for `order_id` (by metadata)."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100}
        auth = {"Authorization": f"Bearer {TEST_SECRET_KEY}"}
        async with httpx.AsyncClient(base_url=self.stripe_api_base, headers=auth) as client:
            while True:
                page = (await client.get("/v1/payment_intents", params=params)).json()
                found += [
                    i for i in page["data"] if (i.get("metadata") or {}).get("order_id") == order_id
                ]
                if not page.get("has_more"):
                    return found
                params["starting_after"] = page["data"][-1]["id"]

    async def successful_charges(self, order_id: str) -> list[dict[str, Any]]:
        return [i for i in await self.payment_intents(order_id) if i["status"] == "succeeded"]

    async def payment_row(self, order_id: str) -> dict[str, Any] | None:
        """The payment service's `order_payments` row of the order, read from its database."""
        assert self.payment.database_url is not None
        async with await psycopg.AsyncConnection.connect(self.payment.database_url) as db:
            cursor = db.cursor(row_factory=dict_row)
            await cursor.execute("SELECT * FROM order_payments WHERE order_id = %s", (order_id,))
            return await cursor.fetchone()

    async def ready(self, timeout: float = 30.0) -> None:
        """Return once all three services consume (a consumer group takes seconds to form):
        an order of a product out of stock is cancelled, and the payment service saw it.

        Tests whose timing matters (a short saga timeout) start from here.
        """
        product = await self.product(stock=0)
        token = self.token(str(uuid.uuid4()))
        order = await self.place(token, [(product, 1)])
        await self.settled(token, order["id"], timeout=timeout)
        try:
            async with asyncio.timeout(timeout):
                while not (row := await self.payment_row(order["id"])) or not row["cancelled"]:
                    await asyncio.sleep(0.2)
        except TimeoutError:
            pytest.fail(f"the payment service did not see order {order['id']} in {timeout} s")

    @asynccontextmanager
    async def paused(self, process: ServiceProcess) -> AsyncIterator[None]:
        """SIGSTOP the service's process for the block, SIGCONT after: as if it hung."""
        child = process._child  # ServiceProcess can kill a service, not pause one
        assert child is not None
        assert child.running()
        child.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            child.send_signal(signal.SIGCONT)


@pytest.fixture
def start_saga(
    start_service: StartService, signing_key: SigningKey, stripe_api_base: str
) -> Callable[..., Saga]:
    """Start inventory, payment and order; keyword arguments go to each one's environment."""

    def start(**environment: str) -> Saga:
        inventory = start_service("inventory", **environment)
        payment = start_service("payment", **environment)
        order = start_service("order", **environment)
        return Saga(inventory, payment, order, signing_key, stripe_api_base)

    return start
