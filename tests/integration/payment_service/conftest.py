"""Helpers of the payment service's integration tests: saga events as the other services would
publish them, and what localstripe holds for an order."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest_asyncio
import stripe

from choreo import records
from choreo.events import Event
from choreo.stack.stripe import TEST_SECRET_KEY
from choreo.testing import records as make

VISA = "4242424242424242"
DECLINED_ON_CHARGE = "4000000000000341"
NEEDS_AUTHENTICATION = "4000000000003220"
DECLINED_ON_ATTACH = "4000000000000002"


def card(number: str = VISA, cvc: str = "739") -> dict[str, Any]:
    return {"card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": cvc}}


def new_id() -> str:
    return str(uuid.uuid4())


def order_created(
    order_id: str,
    user_id: str,
    amount: int = 2500,
    payment_method_id: str | None = None,
    *,
    deadline_in: timedelta = timedelta(minutes=5),
) -> Event[records.OrderCreated]:
    return make.order_created(
        order_id=order_id,
        user_id=user_id,
        items=make.order_lines(1, unit_price=amount),
        payment_method_id=payment_method_id,
        deadline=datetime.now(UTC) + deadline_in,
    )


def stock_reserved(order_id: str) -> Event[records.StockReserved]:
    return make.stock_reserved(order_id=order_id)


def order_cancelled(
    order_id: str, user_id: str, *, previous_status: str, charged: bool
) -> Event[records.OrderCancelled]:
    return make.order_cancelled(
        order_id=order_id,
        user_id=user_id,
        reason="CUSTOMER_REQUEST",
        previous_status=previous_status,
        charged=charged,
    )


class Localstripe:
    """What the emulator holds, read through the official SDK as a test would against Stripe."""

    def __init__(self, api_base: str) -> None:
        self.client = stripe.StripeClient(
            TEST_SECRET_KEY,
            base_addresses={"api": api_base},
            http_client=stripe.HTTPXClient(),
        )

    async def intents_of(self, order_id: str) -> list[stripe.PaymentIntent]:
        """Every PaymentIntent created for the order (by its `metadata.order_id`)."""
        page = await self.client.v1.payment_intents.list_async(params={"limit": 100})
        return [
            intent
            async for intent in page.auto_paging_iter()
            if intent.metadata.to_dict().get("order_id") == order_id
        ]

    async def successful_charges(self, order_id: str) -> list[stripe.Charge]:
        """The order's charges that moved money."""
        charges = []
        for intent in await self.intents_of(order_id):
            assert intent.customer is not None
            customer = intent.customer if isinstance(intent.customer, str) else intent.customer.id
            page = await self.client.v1.charges.list_async(
                params={"customer": customer, "limit": 100}
            )
            charges += [
                charge
                async for charge in page.auto_paging_iter()
                if charge.payment_intent == intent.id and charge.status == "succeeded"
            ]
        return charges

    async def refunds_of(self, intent_id: str) -> list[stripe.Refund]:
        page = await self.client.v1.refunds.list_async(params={"payment_intent": intent_id})
        return list(page.data)


@pytest_asyncio.fixture
async def localstripe(stripe_api_base: str) -> AsyncIterator[Localstripe]:
    emulator = Localstripe(stripe_api_base)
    yield emulator


async def add_card(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/v1/payment-methods", json=body)
    assert response.status_code == 201, response.text
    method: dict[str, Any] = response.json()
    return method
