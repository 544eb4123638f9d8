"""A card that asks for 3-D Secure, through the gateway: the order waits for its customer
(AWAITING_PAYMENT_ACTION, its view carrying the PaymentIntent's client secret and next action);
the customer authenticates at the Stripe emulator, whose webhook reaches the payment service
through the gateway, and the saga goes on to CONFIRMED (one charge) or CANCELLED
(PAYMENT_FAILED, the stock back); a customer who never authenticates is cancelled by the
order's deadline (TIMEOUT), the intent cancelled and the stock back.

The emulator here is the stack's (`python -m choreo.stack.stripe`), its webhook endpoint
registered as `choreo up` registers it, pointing at this test's gateway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from choreo import dev_defaults
from choreo.stack.stripe import WEBHOOK_EVENTS, LocalStripe
from choreo.testing import ServiceProcess, StartService, free_port, query

from .conftest import Saga

THREE_D_SECURE_CARD = "4000000000003220"
PUBLISHABLE_KEY = "pk_test_choreo"  # the emulator takes any pk_test_ key from a client
WAITING = "AWAITING_PAYMENT_ACTION"


@pytest.fixture
def stripe() -> Iterator[LocalStripe]:
    """An emulator of this test's own: its webhooks go to this test's gateway."""
    emulator = LocalStripe(free_port())
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


async def register_webhook(stripe: LocalStripe, gateway: ServiceProcess) -> None:
    """What `choreo up` does: the emulator sends the intents' events to the gateway."""
    async with httpx.AsyncClient(base_url=stripe.api_base) as client:
        response = await client.post(
            "/_config/webhooks/choreo",
            json={
                "url": f"{gateway.url}/api/v1/webhooks/stripe",
                "secret": dev_defaults.STRIPE_WEBHOOK_SECRET,
                "events": list(WEBHOOK_EVENTS),
            },
        )
    assert response.status_code == 200, response.text


async def authenticate(stripe: LocalStripe, action: dict[str, Any], *, success: bool) -> None:
    """The customer's client completes (or fails) the challenge with the client secret and
    the publishable key, as Stripe.js would."""
    async with httpx.AsyncClient(base_url=stripe.api_base) as client:
        response = await client.post(
            f"/v1/payment_intents/{action['provider_payment_id']}/_authenticate",
            data={
                "client_secret": action["client_secret"],
                "success": "true" if success else "false",
                "key": PUBLISHABLE_KEY,
            },
        )
    assert response.status_code == 200, response.text


async def test_an_order_waits_for_3ds_and_ends_as_the_customer_authenticates(
    start_saga: Callable[..., Saga],
    start_service: StartService,
    stripe: LocalStripe,
) -> None:
    saga = start_saga(
        STRIPE_API_BASE=stripe.api_base,
        ORDER_SAGA_TIMEOUT_SECONDS="15",
        PAYMENT_CHARGE_MARGIN_SECONDS="2",
        ORDER_PAYMENT_ACTION_TIMEOUT_SECONDS="15",
    )
    saga.stripe_api_base = stripe.api_base
    gateway = start_service("gateway")
    await register_webhook(stripe, gateway)
    await saga.ready()
    product = await saga.product(stock=3)
    token = await saga.customer(card=THREE_D_SECURE_CARD)

    async with httpx.AsyncClient(
        base_url=gateway.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        placed = []
        for _ in range(3):
            response = await client.post(
                "/api/v1/orders", json={"items": [{"product_id": product, "quantity": 1}]}
            )
            assert response.status_code == 202, response.text
            placed.append(response.json()["id"])
        waiting = [
            await saga.settled(token, order_id, done=lambda o: o["status"] == WAITING)
            for order_id in placed
        ]
        for order in waiting:
            action = order["payment_action"]
            assert action["type"] == "use_stripe_sdk"
            assert action["provider_payment_id"].startswith("pi_")
            assert action["client_secret"].startswith(action["provider_payment_id"] + "_secret_")
        # Nothing is charged while the customer has not authenticated.
        assert await saga.available(product) == 0
        for order in waiting:
            intents = await saga.payment_intents(order["id"])
            assert [i["status"] for i in intents] == ["requires_action"]

        passes, fails, abandoned = waiting
        await authenticate(stripe, passes["payment_action"], success=True)
        await authenticate(stripe, fails["payment_action"], success=False)

        confirmed = await saga.settled(token, passes["id"])
        assert (confirmed["status"], confirmed["charged"]) == ("CONFIRMED", True)
        assert confirmed["payment_action"] is None
        assert [i["status"] for i in await saga.payment_intents(passes["id"])] == ["succeeded"]

        failed = await saga.settled(token, fails["id"])
        assert (failed["status"], failed["cancel_reason"]) == ("CANCELLED", "PAYMENT_FAILED")
        assert failed["charged"] is False
        assert await saga.successful_charges(fails["id"]) == []
        payment = await saga.payment_row(fails["id"])
        assert payment is not None
        assert payment["decline_code"] == "payment_intent_authentication_failure"

        timed_out = await saga.settled(token, abandoned["id"], timeout=60)
        assert (timed_out["status"], timed_out["cancel_reason"]) == ("CANCELLED", "TIMEOUT")
        assert timed_out["payment_action"] is None
        # The payment service cancels the challenge once the order is cancelled.
        async with asyncio.timeout(30):
            while [i["status"] for i in await saga.payment_intents(abandoned["id"])] != [
                "canceled"
            ]:
                await asyncio.sleep(0.2)
        row = await saga.payment_row(abandoned["id"])
        assert row is not None
        assert row["status"] == "VOIDED"

        # The stock of both cancelled orders is back; the confirmed one's is sold.
        async with asyncio.timeout(30):
            while await saga.available(product) != 2:
                await asyncio.sleep(0.2)

        timeline = await client.get(f"/api/v1/orders/{passes['id']}/timeline")
        types = [entry["type"] for entry in timeline.json()["items"]]
        assert types.index("PaymentActionRequired") < types.index("PaymentSucceeded")

    # Each webhook was applied once at most: the succeeded one settled its order.
    assert saga.payment.database_url is not None
    outcomes = await query(
        saga.payment.database_url, "SELECT type, outcome FROM stripe_events ORDER BY type"
    )
    assert ("payment_intent.succeeded", "settled") in outcomes
    assert ("payment_intent.payment_failed", "settled") in outcomes
