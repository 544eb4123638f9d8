"""`choreo verify` on a running `choreo up` after a confirmed order, a declined card and an order
out of stock: consistent, with every one of them judged; and an order held for review (its card
authorised, not captured) is in time, its authorisation not an intent left open."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from choreo.stack.stripe import TEST_SECRET_KEY

from .conftest import ChoreoUp, choreo
from .journey import CARD, Gateway

DECLINED_CARD = {**CARD, "number": "4000000000000341"}


async def test_verify_passes_after_a_confirmed_a_declined_and_an_out_of_stock_order(
    choreo_up: ChoreoUp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `choreo()` runs the CLI in this environment: this stack's Stripe and e-mail sink.
    monkeypatch.setenv("STRIPE_API_BASE", choreo_up.url("stripe"))
    monkeypatch.setenv("STRIPE_API_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("SENDGRID_HOST", choreo_up.url("sendgrid"))
    since = datetime.now(UTC).isoformat()  # the other scenarios' orders are not this one's
    gateway = Gateway(choreo_up)
    customer = await gateway.register()
    declined = await gateway.register(with_card=False)
    async with gateway.client(declined.token) as client:
        response = await client.post("/payment-methods", json={"card": DECLINED_CARD})
    assert response.status_code == 201, response.text
    plenty, scarce = await gateway.product(stock=10), await gateway.product(stock=1)
    placed = [
        (customer, await gateway.order(customer, plenty)),
        (declined, await gateway.order(declined, plenty)),
        (customer, await gateway.order(customer, scarce, quantity=2)),
    ]
    ended = await asyncio.gather(*(gateway.settled(who, order_id) for who, order_id in placed))
    assert [(order["status"], order["cancel_reason"]) for order in ended] == [
        ("CONFIRMED", None),
        ("CANCELLED", "PAYMENT_FAILED"),
        ("CANCELLED", "OUT_OF_STOCK"),
    ]
    # A new account's order from 500.00 is held for review (the risk screening).
    newcomer = await gateway.register()
    await asyncio.sleep(1)  # its UserRegistered reaches the payment service first
    held_id = await gateway.order(newcomer, await gateway.product(stock=2, price=60_000))
    async with asyncio.timeout(30), gateway.client(newcomer.token) as client:
        while (held := (await client.get(f"/orders/{held_id}")).json())["status"] != "ON_HOLD":
            assert held["status"] in ("PENDING", "RESERVED"), held
            await asyncio.sleep(0.2)

    # Every run must pass (`choreo()` asserts exit status 0); the orders are judged as soon as
    # their effects have landed (outboxes drained, no group lagging).
    report: dict[str, Any] = {}
    async with asyncio.timeout(40):
        while True:
            report = await choreo(choreo_up, "verify", "--since", since)
            checks = {check["name"]: check for check in report["checks"]}
            if checks["services-agree"]["facts"]["judged"] == 3:
                break
            await asyncio.sleep(0.5)

    assert (report["ok"], report["violations"]) == (True, [])
    assert {name: check["status"] for name, check in checks.items()} == {
        "orders-terminal": "ok",
        "services-agree": "ok",
        "stock-conserved": "ok",
        "stripe": "ok",
        "emails": "ok",
        "outboxes": "ok",
        "consumer-lag": "ok",
        "dead-letters": "ok",
    }
    assert checks["orders-terminal"]["facts"] == {"orders": 4, "ended": 3, "in_time": 1, "stuck": 0}
    assert checks["emails"]["facts"]["judged"] == 3
    assert checks["emails"]["facts"]["source"] == "e-mails at the sink"
    # The customer's charge and the declined card's attempt, neither left open; the held
    # order's authorisation is open (requires_capture) and no violation: the review ends it.
    assert (checks["stripe"]["facts"]["audited"], checks["stripe"]["facts"]["open"]) == (3, 1)
