"""The risk screening in the saga, through the gateway: each rule holds or declines the attempt
it names, and says so; a held order's review is approved (one capture), rejected (the hold
cancelled, the stock back, the customer told) or expires; a check that cannot run holds.

The gateway trusts `X-Forwarded-For` here, so each test picks its client's address (the last
entry), as a load balancer in front of it would set it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from choreo import records
from choreo.stack.sendgrid_sink import SINK_API_KEY, SendGridSink
from choreo.testing import ServiceProcess, StartService, free_port, publish

from .conftest import DECLINED_CARD, GOOD_CARD, Saga

HELD_OR_DONE = {"CONFIRMED", "CANCELLED", "ON_HOLD"}
# Stripe's test cards that succeed, each its own card number (so its own fingerprint).
FIVE_CARDS = (
    GOOD_CARD,
    "5555555555554444",
    "5200828282828210",
    "6011111111111117",
    "4000056655665556",
)


@dataclass
class Screened:
    """The saga behind a gateway that believes X-Forwarded-For, and a mailbox."""

    saga: Saga
    gateway: ServiceProcess
    kafka_bootstrap: str
    topics: str
    sink: SendGridSink | None = None

    def client(self, token: str, address: str = "198.51.100.1") -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.gateway.url,
            headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": address},
            timeout=30.0,
        )

    async def order(
        self,
        token: str,
        product: str,
        *,
        address: str = "198.51.100.1",
        payment_method_id: str | None = None,
        done: Callable[[dict[str, Any]], bool] = lambda o: o.get("status") in HELD_OR_DONE,
    ) -> dict[str, Any]:
        """Place an order of one unit through the gateway and wait until it is decided or held."""
        body: dict[str, Any] = {"items": [{"product_id": product, "quantity": 1}]}
        if payment_method_id is not None:
            body["payment_method_id"] = payment_method_id
        async with self.client(token, address) as client:
            response = await client.post("/api/v1/orders", json=body)
        assert response.status_code == 202, response.text
        return await self.saga.settled(token, response.json()["id"], done=done)

    async def risk(self, order_id: str) -> dict[str, Any]:
        async with self.client(self.saga.admin) as client:
            response = await client.get(f"/api/v1/admin/orders/{order_id}/risk")
        assert response.status_code == 200, response.text
        explanation: dict[str, Any] = response.json()
        return explanation

    async def review(self, order_id: str, verdict: str) -> httpx.Response:
        async with self.client(self.saga.admin) as client:
            return await client.post(
                f"/api/v1/admin/reviews/{order_id}/{verdict}", json={"note": "checked"}
            )

    async def registered(self, token: str, email: str, at: datetime) -> str:
        """Announce the token's user on user.event as the user service would; its id."""
        user_id = user_of(token)
        await publish(
            self.kafka_bootstrap,
            self.topics,
            records.UserRegistered(
                user_id=user_id,
                email=email,
                full_name="Risky Customer",
                role="customer",
                registered_at=at,
            ),
        )
        return user_id

    async def payment_db(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        assert self.saga.payment.database_url is not None
        async with await psycopg.AsyncConnection.connect(self.saga.payment.database_url) as db:
            cursor = await db.execute(sql, params)
            return await cursor.fetchall() if cursor.description else []


def user_of(token: str) -> str:
    """The user id (`sub`) a test token was issued to."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sub"])


def rules(explanation: dict[str, Any]) -> list[str]:
    return [reason["rule"] for reason in explanation["reasons"]]


@pytest.fixture
def screened(
    start_saga: Callable[..., Saga],
    start_service: StartService,
    kafka_bootstrap: str,
    topics: str,
) -> Callable[..., Screened]:
    def start(**environment: str) -> Screened:
        saga = start_saga(**environment)
        gateway = start_service(
            "gateway",
            GATEWAY_TRUST_FORWARDED="true",
            GATEWAY_ADDRESS_RATE_LIMIT_PER_SECOND="1000",
            GATEWAY_ADDRESS_RATE_LIMIT_BURST="2000",
            GATEWAY_RATE_LIMIT_PER_SECOND="1000",
            GATEWAY_RATE_LIMIT_BURST="2000",
        )
        return Screened(saga, gateway, kafka_bootstrap, topics)

    return start


@pytest.fixture
def sendgrid() -> Iterator[SendGridSink]:
    sink = SendGridSink(free_port())
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


async def test_a_cards_6th_attempt_in_10_minutes_is_held_and_its_11th_declined(
    screened: Callable[..., Screened],
) -> None:
    risky = screened()
    token = await risky.saga.customer()
    product = await risky.saga.product(stock=50, price=1000)
    outcomes = [await risky.order(token, product) for _ in range(11)]
    assert [o["status"] for o in outcomes[:5]] == ["CONFIRMED"] * 5
    assert [o["status"] for o in outcomes[5:10]] == ["ON_HOLD"] * 5
    sixth = await risky.risk(outcomes[5]["id"])
    assert (sixth["decision"], rules(sixth)) == ("REVIEW", ["card_velocity_review"])
    assert sixth["counters"]["card_attempts"] == 6
    assert "attempt 6 with this card in 10 min" in sixth["reasons"][0]["detail"]
    eleventh = outcomes[10]
    assert (eleventh["status"], eleventh["cancel_reason"]) == ("CANCELLED", "PAYMENT_FAILED")
    explained = await risky.risk(eleventh["id"])
    assert explained["decision"] == "DECLINE"
    assert rules(explained)[0] == "card_velocity_decline"
    # Declined by the screening: no intent was ever made for it.
    assert await risky.saga.payment_intents(eleventh["id"]) == []
    # Past the decline limit the card's attempts are no longer counted (a hot card's history
    # never slows its screening), and the explanation says so.
    await risky.order(token, product)  # the 12th
    thirteenth = await risky.risk((await risky.order(token, product))["id"])
    assert (thirteenth["decision"], thirteenth["counters"]["card_attempts"]) == ("DECLINE", 12)
    assert "attempt 12 or more with this card in 10 min" in thirteenth["reasons"][0]["detail"]


async def test_an_addresss_21st_attempt_in_an_hour_is_declined(
    screened: Callable[..., Screened],
) -> None:
    risky = screened()
    product = await risky.saga.product(stock=50, price=1000)
    # Five cards (one fingerprint per card number), 4-5 orders each: no card is held.
    customers = [await risky.saga.customer(card) for card in FIVE_CARDS]
    address = "203.0.113.21"
    outcomes = []
    for number in range(21):
        outcomes.append(await risky.order(customers[number % 5], product, address=address))
    assert [o["status"] for o in outcomes[:20]] == ["CONFIRMED"] * 20
    assert outcomes[20]["status"] == "CANCELLED"
    explained = await risky.risk(outcomes[20]["id"])
    assert (explained["decision"], rules(explained)) == ("DECLINE", ["address_velocity"])
    assert explained["counters"]["address_attempts"] == 21
    # Another address is not counted with it.
    other = await risky.order(customers[1], product, address="203.0.113.22")  # its 5th
    assert other["status"] == "CONFIRMED"


async def test_after_3_declines_in_an_hour_the_next_attempt_is_held_even_with_a_good_card(
    screened: Callable[..., Screened],
) -> None:
    # The declined test card is one card for every customer: its velocity is not the point.
    risky = screened(
        PAYMENT_RISK_CARD_REVIEW_ATTEMPT="100", PAYMENT_RISK_CARD_DECLINE_ATTEMPT="100"
    )
    product = await risky.saga.product(stock=50, price=1000)
    token = await risky.saga.customer(card=DECLINED_CARD)
    declined = [await risky.order(token, product) for _ in range(3)]
    assert {o["status"] for o in declined} == {"CANCELLED"}
    async with risky.saga.payment.client(token) as client:
        card = {"number": GOOD_CARD, "exp_month": 12, "exp_year": 2034, "cvc": "123"}
        added = await client.post("/api/v1/payment-methods", json={"card": card})
    assert added.status_code == 201, added.text
    held = await risky.order(token, product, payment_method_id=added.json()["id"])
    assert held["status"] == "ON_HOLD"
    explained = await risky.risk(held["id"])
    assert rules(explained) == ["card_testing"]
    assert explained["counters"]["customer_declines"] == 3
    # Three declines from one address, of three customers: the next customer there is held.
    address = "192.0.2.77"
    for _ in range(3):
        tester = await risky.saga.customer(card=DECLINED_CARD)
        assert (await risky.order(tester, product, address=address))["status"] == "CANCELLED"
    honest = await risky.saga.customer(card="5555555555554444")
    held = await risky.order(honest, product, address=address)
    assert held["status"] == "ON_HOLD"
    explained = await risky.risk(held["id"])
    assert rules(explained) == ["card_testing"]
    assert (
        explained["counters"]["customer_declines"],
        explained["counters"]["address_declines"],
    ) == (0, 3)


async def test_an_amount_over_3_times_the_median_of_3_paid_orders_scores_30(
    screened: Callable[..., Screened], start_service: StartService
) -> None:
    risky = screened(
        PAYMENT_RISK_CARD_REVIEW_ATTEMPT="100", PAYMENT_RISK_CARD_DECLINE_ATTEMPT="100"
    )
    token = await risky.saga.customer()
    usual = await risky.saga.product(stock=50, price=1000)
    dear = await risky.saga.product(stock=5, price=3001)
    for _ in range(3):
        assert (await risky.order(token, usual))["status"] == "CONFIRMED"
    approved = await risky.order(token, dear)
    assert approved["status"] == "CONFIRMED"  # 30 points: under the review score (65)
    explained = await risky.risk(approved["id"])
    assert (explained["decision"], explained["score"]) == ("APPROVE", 30)
    assert explained["reasons"] == [
        {
            "rule": "amount_anomaly",
            "points": 30,
            "detail": "3001 is over 3 times the median 1000 of 3 paid orders",
        }
    ]
    # With 70 points an anomaly alone is held: the score against its thresholds.
    risky.saga.payment.stop()
    risky.saga.payment = start_service(
        "payment",
        PAYMENT_RISK_CARD_REVIEW_ATTEMPT="100",
        PAYMENT_RISK_CARD_DECLINE_ATTEMPT="100",
        PAYMENT_RISK_ANOMALY_POINTS="70",
    )
    held = await risky.order(token, dear)
    assert held["status"] == "ON_HOLD"
    explained = await risky.risk(held["id"])
    assert rules(explained) == ["amount_anomaly", "score"]
    assert explained["reasons"][1]["detail"] == "score 70 ≥ review threshold 65"
    # With 80, over the decline threshold (75): declined.
    risky.saga.payment.stop()
    risky.saga.payment = start_service(
        "payment",
        PAYMENT_RISK_CARD_REVIEW_ATTEMPT="100",
        PAYMENT_RISK_CARD_DECLINE_ATTEMPT="100",
        PAYMENT_RISK_ANOMALY_POINTS="80",
    )
    declined = await risky.order(token, dear)
    assert (declined["status"], declined["cancel_reason"]) == ("CANCELLED", "PAYMENT_FAILED")
    explained = await risky.risk(declined["id"])
    assert (explained["decision"], explained["score"]) == ("DECLINE", 80)
    assert explained["reasons"][1]["detail"] == "score 80 ≥ decline threshold 75"


async def test_the_median_is_of_the_customers_latest_paid_orders(
    screened: Callable[..., Screened],
) -> None:
    risky = screened(
        PAYMENT_RISK_CARD_REVIEW_ATTEMPT="100",
        PAYMENT_RISK_CARD_DECLINE_ATTEMPT="100",
        PAYMENT_RISK_ANOMALY_HISTORY="3",
    )
    token = await risky.saga.customer()
    prices = (1000, 3000, 9001)
    cheap, usual, dear = [await risky.saga.product(stock=5, price=price) for price in prices]
    for product in (cheap, cheap, cheap, usual, usual, usual):
        assert (await risky.order(token, product))["status"] == "CONFIRMED"
    scored = await risky.order(token, dear)
    assert scored["status"] == "CONFIRMED"
    explained = await risky.risk(scored["id"])
    # Over all six paid orders the median would be 1000; over the latest three it is 3000.
    assert explained["reasons"] == [
        {
            "rule": "amount_anomaly",
            "points": 30,
            "detail": "9001 is over 3 times the median 3000 of 3 paid orders",
        }
    ]


async def test_a_new_accounts_order_from_500_is_held(screened: Callable[..., Screened]) -> None:
    risky = screened()
    token = await risky.saga.customer()
    await risky.registered(token, f"new.{uuid.uuid4().hex[:6]}@example.com", datetime.now(UTC))
    small = await risky.saga.product(stock=5, price=49_999)
    large = await risky.saga.product(stock=5, price=50_000)
    assert (await risky.order(token, small))["status"] == "CONFIRMED"
    held = await risky.order(token, large)
    assert held["status"] == "ON_HOLD"
    assert rules(await risky.risk(held["id"])) == ["new_account"]
    # An account a day old is not new.
    older = await risky.saga.customer()
    await risky.registered(older, "old@example.com", datetime.now(UTC) - timedelta(hours=25))
    assert (await risky.order(older, large))["status"] == "CONFIRMED"


async def test_the_lists_come_first_block_then_allow(screened: Callable[..., Screened]) -> None:
    risky = screened()
    product = await risky.saga.product(stock=20, price=60_000)
    blocked_token = await risky.saga.customer()
    email = f"Blocked.{uuid.uuid4().hex[:6]}@Example.com"
    await risky.registered(blocked_token, email, datetime.now(UTC) - timedelta(days=30))
    allowed_token = await risky.saga.customer()
    allowed_id = await risky.registered(allowed_token, "vip@example.com", datetime.now(UTC))
    async with risky.client(risky.saga.admin) as admin:
        for entry in (
            {"kind": "email", "value": email.upper(), "action": "block"},
            {"kind": "customer", "value": allowed_id, "action": "allow"},
        ):
            response = await admin.post("/api/v1/admin/risk/lists", json=entry)
            assert response.status_code == 201, response.text
    blocked = await risky.order(blocked_token, product)
    assert (blocked["status"], blocked["cancel_reason"]) == ("CANCELLED", "PAYMENT_FAILED")
    assert rules(await risky.risk(blocked["id"])) == ["block_list"]
    # A new account's order of 600.00 would be held: the allow-list approves it first.
    allowed = await risky.order(allowed_token, product)
    assert allowed["status"] == "CONFIRMED"
    explained = await risky.risk(allowed["id"])
    assert (explained["decision"], rules(explained)) == ("APPROVE", ["allow_list"])


async def test_approving_a_held_order_captures_once_and_confirms_it(
    screened: Callable[..., Screened],
) -> None:
    risky = screened(PAYMENT_RISK_CARD_REVIEW_ATTEMPT="1")
    token = await risky.saga.customer()
    product = await risky.saga.product(stock=3, price=1500)
    held = await risky.order(token, product)
    assert held["status"] == "ON_HOLD"
    (intent,) = await risky.saga.payment_intents(held["id"])
    assert (intent["status"], intent["capture_method"]) == ("requires_capture", "manual")
    # The StockReserved that triggered the decision, again (as a new event: same fact): no
    # second decision, no second authorisation.
    await publish(
        risky.kafka_bootstrap,
        risky.topics,
        records.StockReserved(
            order_id=held["id"],
            items=(records.StockLine(product_id=product, quantity=1),),
            reserved_at=datetime.now(UTC),
        ),
    )
    await asyncio.sleep(2)
    assert len(await risky.saga.payment_intents(held["id"])) == 1
    assert await risky.payment_db(
        "SELECT count(*) FROM risk_assessments WHERE order_id = %s", held["id"]
    ) == [(1,)]

    approved = await risky.review(held["id"], "approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["review_status"] == "APPROVED"
    confirmed = await risky.saga.settled(token, held["id"])
    assert confirmed["status"] == "CONFIRMED"
    again = await risky.review(held["id"], "approve")
    assert again.status_code == 200, again.text
    (captured,) = await risky.saga.payment_intents(held["id"])
    assert captured["status"] == "succeeded"
    assert [c["captured"] for c in captured["charges"]["data"]] == [True]
    rejected_late = await risky.review(held["id"], "reject")
    assert rejected_late.status_code == 409
    assert rejected_late.json()["error"]["code"] == "review_closed"


async def test_rejecting_a_held_order_cancels_the_hold_releases_stock_and_tells_the_customer(
    screened: Callable[..., Screened], start_service: StartService, sendgrid: SendGridSink
) -> None:
    risky = screened(PAYMENT_RISK_CARD_REVIEW_ATTEMPT="1")
    start_service("notification", SENDGRID_HOST=sendgrid.host, SENDGRID_API_KEY=SINK_API_KEY)
    token = await risky.saga.customer()
    email = f"held.{uuid.uuid4().hex[:8]}@example.com"
    await risky.registered(token, email, datetime.now(UTC) - timedelta(days=30))
    product = await risky.saga.product(stock=3, price=1500)
    held = await risky.order(token, product)
    assert held["status"] == "ON_HOLD"
    assert await risky.saga.available(product) == 2

    rejected = await risky.review(held["id"], "reject")
    assert rejected.status_code == 200, rejected.text
    assert (rejected.json()["review_status"], rejected.json()["review_note"]) == (
        "REJECTED",
        "checked",
    )
    cancelled = await risky.saga.settled(token, held["id"])
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("CANCELLED", "PAYMENT_FAILED")
    (intent,) = await risky.saga.payment_intents(held["id"])
    assert intent["status"] == "canceled"
    async with asyncio.timeout(20):
        while await risky.saga.available(product) != 3:
            await asyncio.sleep(0.2)
        while not await _mail_to(sendgrid, email):
            await asyncio.sleep(0.2)
    assert (await risky.review(held["id"], "reject")).status_code == 200
    assert (await risky.review(held["id"], "approve")).status_code == 409
    unknown = await risky.review(str(uuid.uuid4()), "approve")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "review_not_found")


async def _mail_to(sink: SendGridSink, to: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=sink.host) as client:
        response = await client.get("/messages", params={"to": to})
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()
    return found


async def test_a_review_left_open_expires_into_a_rejection(
    screened: Callable[..., Screened],
) -> None:
    risky = screened(
        PAYMENT_RISK_CARD_REVIEW_ATTEMPT="1",
        PAYMENT_RISK_REVIEW_EXPIRY_SECONDS="3",
        PAYMENT_RISK_REVIEW_SWEEP_INTERVAL_SECONDS="0.5",
    )
    token = await risky.saga.customer()
    product = await risky.saga.product(stock=3, price=1500)
    held = await risky.order(token, product)
    assert held["status"] == "ON_HOLD"
    cancelled = await risky.saga.settled(token, held["id"], timeout=30)
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("CANCELLED", "PAYMENT_FAILED")
    explained = await risky.risk(held["id"])
    assert explained["review_status"] == "EXPIRED"
    assert explained["payment_status"] == "FAILED"
    (intent,) = await risky.saga.payment_intents(held["id"])
    assert intent["status"] == "canceled"


async def test_with_the_risk_store_unavailable_orders_are_held_never_confirmed(
    screened: Callable[..., Screened],
) -> None:
    risky = screened(PAYMENT_RISK_TIMEOUT_SECONDS="0.5")
    token = await risky.saga.customer()
    product = await risky.saga.product(stock=5, price=1000)
    assert risky.saga.payment.database_url is not None
    async with await psycopg.AsyncConnection.connect(risky.saga.payment.database_url) as locker:
        await locker.execute("LOCK TABLE risk_attempts IN ACCESS EXCLUSIVE MODE")
        outcomes = [await risky.order(token, product) for _ in range(2)]
        await locker.rollback()
    assert [o["status"] for o in outcomes] == ["ON_HOLD", "ON_HOLD"]
    for outcome in outcomes:
        explained = await risky.risk(outcome["id"])
        assert rules(explained) == ["risk_check_unavailable"]
        assert explained["counters"] is None
