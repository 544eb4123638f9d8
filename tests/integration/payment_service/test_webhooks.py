"""Stripe's webhooks at the payment service: verified (a bad, missing or stale signature is 400
and applies nothing), reachable through the gateway without a token, each event applied once,
events about anything else acknowledged and ignored, and an intent whose answer never reached
the service (its order CHARGING) settled by its webhook, charged once."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from choreo import dev_defaults
from choreo.auth import SigningKey
from choreo.stack.stripe import TEST_SECRET_KEY
from choreo.testing import ServiceProcess, StartService, query
from payment_service.stripe_client import StripeGateway

from .conftest import Localstripe, add_card, card

SECRET = dev_defaults.STRIPE_WEBHOOK_SECRET  # what the service verifies with in test
WEBHOOK = "/api/v1/webhooks/stripe"


def intent_event(
    intent_id: str,
    order_id: str,
    payment_id: str,
    kind: str = "payment_intent.succeeded",
    event_id: str | None = None,
) -> dict[str, Any]:
    """A Stripe event about a PaymentIntent, shaped as Stripe (and localstripe) send it."""
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": kind,
        "created": int(time.time()),
        "data": {
            "object": {
                "id": intent_id,
                "object": "payment_intent",
                "status": "succeeded",
                "metadata": {"order_id": order_id, "payment_id": payment_id},
            }
        },
    }


def signed(
    event: dict[str, Any], secret: str = SECRET, at: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a delivery of `event`."""
    body = json.dumps(event).encode()
    return body, signed_headers(body, secret, at)


def signed_headers(body: bytes, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    """`Stripe-Signature` as Stripe computes it (t=timestamp, v1=HMAC-SHA256 of
    "timestamp.body" with the endpoint's secret), for `body` as it is."""
    moment = at if at is not None else int(time.time())
    digest = hmac.new(secret.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={moment},v1={digest}", "Content-Type": "application/json"}


async def deliver(process: ServiceProcess, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with process.client() as client:
        return await client.post(WEBHOOK, content=body, headers=headers)


async def stripe_events(payment: ServiceProcess) -> list[tuple[Any, ...]]:
    assert payment.database_url is not None
    return await query(payment.database_url, "SELECT id, outcome FROM stripe_events ORDER BY id")


async def test_a_webhook_not_signed_by_stripe_is_refused_and_changes_nothing(
    start_service: StartService,
) -> None:
    payment = start_service("payment")
    gateway = start_service("gateway")
    event = intent_event("pi_unknown", str(uuid.uuid4()), str(uuid.uuid4()))
    body, good = signed(event)
    _, forged = signed(event, secret="whsec_someone_else")
    _, stale = signed(event, at=int(time.time()) - 3600)
    for headers in (forged, stale, {"Content-Type": "application/json"}):
        # Through the gateway, with no token: it reaches the payment service, which refuses it.
        refused = await deliver(gateway, body, headers)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "invalid_signature"
    tampered = await deliver(gateway, body.replace(b"pi_unknown", b"pi_other00"), good)
    assert tampered.status_code == 400
    assert await stripe_events(payment) == []


async def test_each_event_is_applied_once_and_one_about_another_systems_intent_is_ignored(
    start_service: StartService,
) -> None:
    payment = start_service("payment")
    event = intent_event("pi_elsewhere", str(uuid.uuid4()), str(uuid.uuid4()))
    body, headers = signed(event)
    first = await deliver(payment, body, headers)
    assert first.status_code == 200, first.text
    assert first.json() == {"received": True, "outcome": "ignored"}
    again = await deliver(payment, *signed(event))
    assert again.json() == {"received": True, "outcome": "duplicate"}
    other_kind = intent_event("pi_x", "not-an-order", "p", kind="customer.created")
    assert (await deliver(payment, *signed(other_kind))).json()["outcome"] == "ignored"
    # Signed, but of a shape that names nothing: acknowledged (an object) or refused (not one).
    odd = {"id": "evt_odd", "type": "payment_intent.succeeded", "data": ["not", "an", "object"]}
    assert (await deliver(payment, *signed(odd))).json()["outcome"] == "ignored"
    listed = await deliver(payment, b"[1, 2]", signed_headers(b"[1, 2]"))
    assert (listed.status_code, listed.json()["error"]["code"]) == (400, "invalid_signature")
    assert await stripe_events(payment) == sorted(
        [(event["id"], "ignored"), (other_kind["id"], "ignored"), ("evt_odd", "ignored")]
    )


async def test_an_intent_whose_answer_was_lost_is_settled_by_its_webhook_and_charged_once(
    start_service: StartService,
    signing_key: SigningKey,
    stripe_api_base: str,
    localstripe: Localstripe,
) -> None:
    payment = start_service("payment")
    assert payment.database_url is not None
    url = payment.database_url
    user_id = str(uuid.uuid4())
    async with payment.client(signing_key.issue(user_id)) as client:
        await add_card(client, card())
    [(customer_id, method_id)] = await query(
        url,
        "SELECT c.provider_customer_id, m.provider_payment_method_id FROM customers c"
        " JOIN payment_methods m USING (user_id) WHERE user_id = %s",
        user_id,
    )
    # An order whose charge was confirmed at Stripe, then the service lost the answer: its
    # row still NONE with phase one's attempt committed, i.e. CHARGING.
    order_id = str(uuid.uuid4())
    [(payment_id,)] = await query(
        url,
        "INSERT INTO order_payments (order_id, order_known, user_id, amount, currency,"
        " stock_reserved, deadline) VALUES (%s, true, %s, 1999, 'USD', true, %s)"
        " RETURNING payment_id",
        order_id,
        user_id,
        datetime.now(UTC) + timedelta(minutes=10),
    )
    gateway = StripeGateway(TEST_SECRET_KEY, stripe_api_base)
    try:
        intent = await gateway.create_intent(
            amount=1999,
            currency="USD",
            customer_id=customer_id,
            payment_method_id=method_id,
            metadata={"order_id": order_id, "payment_id": str(payment_id)},
        )
        await query(
            url,
            "INSERT INTO charge_attempts (order_id, provider_payment_id,"
            " provider_payment_method_id) VALUES (%s, %s, %s)",
            order_id,
            intent.id,
            method_id,
        )
        await gateway.confirm_intent(intent.id)
    finally:
        await gateway.aclose()

    event = intent_event(intent.id, order_id, str(payment_id))
    settled = await deliver(payment, *signed(event))
    assert settled.json() == {"received": True, "outcome": "settled"}
    again = await deliver(payment, *signed(intent_event(intent.id, order_id, str(payment_id))))
    assert again.json()["outcome"] == "ignored"  # another event: the outcome is recorded

    [(status, recorded_intent)] = await query(
        url, "SELECT status, provider_payment_id FROM order_payments WHERE order_id = %s", order_id
    )
    assert (status, recorded_intent) == ("SUCCEEDED", intent.id)
    published = await query(
        url, "SELECT headers->>'ce_type' FROM outbox WHERE key = %s ORDER BY id", order_id
    )
    assert published == [("PaymentSucceeded",)]
    assert len(await localstripe.successful_charges(order_id)) == 1
