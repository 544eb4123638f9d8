"""A customer and an admin, driving a running system through the gateway alone."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "choreo-admin"
CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "987"}


@dataclass
class Customer:
    email: str
    password: str
    token: str
    user_id: str


class System(Protocol):
    """What a scenario may use of the stack it runs on, whichever it is (`choreo up` in
    tests/e2e, docker-compose in tests/containers)."""

    def url(self, part: str) -> str:
        """The base URL of a part: a service, `stripe` or `sendgrid`."""
        ...

    async def cli(self, *arguments: str) -> Any:
        """Run `choreo ARGS --json` as an operator would against this stack; its parsed
        output (the command must exit 0)."""
        ...


class Gateway:
    """The public API as a user's HTTP client sees it."""

    def __init__(self, running: System) -> None:
        self.running = running
        self.base = f"{running.url('gateway')}/api/v1"

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.base, headers=headers, timeout=30.0)

    async def login(self, email: str, password: str) -> str:
        async with self.client() as client:
            response = await client.post("/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    async def admin(self) -> str:
        return await self.login(ADMIN_EMAIL, ADMIN_PASSWORD)

    async def register(self, *, with_card: bool = True) -> Customer:
        email = f"e2e-{uuid.uuid4().hex[:10]}@example.com"
        password = f"pw-{uuid.uuid4().hex}"
        async with self.client() as client:
            response = await client.post(
                "/auth/register",
                json={"email": email, "password": password, "full_name": "E2E Customer"},
            )
        assert response.status_code == 201, response.text
        user_id = response.json()["id"]
        token = await self.login(email, password)
        if with_card:
            async with self.client(token) as client:
                response = await client.post("/payment-methods", json={"card": CARD})
            assert response.status_code == 201, response.text
        return Customer(email, password, token, user_id)

    async def product(self, stock: int = 100, price: int = 1500) -> str:
        async with self.client(await self.admin()) as client:
            response = await client.post(
                "/products",
                json={
                    "name": f"E2E kettle {uuid.uuid4().hex[:6]}",
                    "description": "Boils water, end to end",
                    "category": "kitchen",
                    "price": price,
                    "currency": "USD",
                    "stock": stock,
                },
            )
        assert response.status_code == 201, response.text
        product_id: str = response.json()["id"]
        return product_id

    async def order(self, customer: Customer, product_id: str, quantity: int = 1) -> str:
        async with self.client(customer.token) as client:
            response = await client.post(
                "/orders", json={"items": [{"product_id": product_id, "quantity": quantity}]}
            )
        assert response.status_code == 202, response.text
        order_id: str = response.json()["id"]
        return order_id

    async def settled(self, customer: Customer, order_id: str, timeout: float = 60) -> Any:
        order: dict[str, Any] = {}
        async with asyncio.timeout(timeout), self.client(customer.token) as client:
            while order.get("status") not in ("CONFIRMED", "CANCELLED"):
                response = await client.get(f"/orders/{order_id}")
                assert response.status_code == 200, response.text
                order = response.json()
                await asyncio.sleep(0.2)
        return order

    async def emails_to(self, address: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.running.url("sendgrid")) as client:
            response = await client.get("/messages", params={"to": address})
        assert response.status_code == 200, response.text
        messages: list[dict[str, Any]] = response.json()
        return messages


def subject_of(message: dict[str, Any]) -> str:
    subject = message.get("subject") or message["personalizations"][0].get("subject", "")
    return str(subject).lower()
