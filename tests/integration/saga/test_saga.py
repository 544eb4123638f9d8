"""The order saga across inventory, payment and order, through their HTTP APIs.

Real PostgreSQL (one database per service), the real broker and localstripe.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from typer.testing import CliRunner

from choreo.cli import app
from choreo.events import Event
from choreo.stack.stripe import TEST_SECRET_KEY
from choreo.testing import collect_events

from .conftest import DECLINED_CARD, Saga


async def refunds_of(saga: Saga, order_id: str) -> list[dict[str, Any]]:
    intents = {i["id"] for i in await saga.payment_intents(order_id)}
    auth = {"Authorization": f"Bearer {TEST_SECRET_KEY}"}
    async with httpx.AsyncClient(base_url=saga.stripe_api_base, headers=auth) as client:
        refunds = (await client.get("/v1/refunds", params={"limit": 100})).json()["data"]
    return [r for r in refunds if r.get("payment_intent") in intents]


def of_order(order_id: str, *types: str) -> Callable[[list[Event]], bool]:
    def seen(events: list[Event]) -> bool:
        return all(any(e.subject == order_id and e.type == t for e in events) for t in types)

    return seen


async def test_happy_path_confirms_charges_once_and_takes_stock_once(
    start_saga: Callable[..., Saga],
) -> None:
    saga = start_saga()
    product = await saga.product(stock=10, price=2500)
    customer = await saga.customer()

    placed = await saga.place(customer, [(product, 2)])
    order = await saga.settled(customer, placed["id"])

    assert placed["status"] == "PENDING"
    assert placed["total"] == 5000
    assert order["status"] == "CONFIRMED"
    assert await saga.available(product) == 8
    charges = await saga.successful_charges(order["id"])
    assert [c["amount"] for c in charges] == [5000]


async def test_out_of_stock_cancels_without_charging(
    start_saga: Callable[..., Saga],
) -> None:
    saga = start_saga()
    scarce, plenty = await saga.product(stock=1), await saga.product(stock=100)
    customer = await saga.customer()

    placed = await saga.place(customer, [(plenty, 3), (scarce, 2)])
    order = await saga.settled(customer, placed["id"])

    assert (order["status"], order["cancel_reason"]) == ("CANCELLED", "OUT_OF_STOCK")
    assert await saga.payment_intents(order["id"]) == []
    assert (await saga.available(scarce), await saga.available(plenty)) == (1, 100)


async def test_a_declined_card_cancels_and_releases_the_stock(
    start_saga: Callable[..., Saga], kafka_bootstrap: str, topics: str
) -> None:
    saga = start_saga()
    product = await saga.product(stock=5)
    customer = await saga.customer(card=DECLINED_CARD)

    placed = await saga.place(customer, [(product, 2)])
    order = await saga.settled(customer, placed["id"])
    await collect_events(
        kafka_bootstrap, f"{topics}stock.updated", of_order(order["id"], "StockReleased")
    )

    assert (order["status"], order["cancel_reason"]) == ("CANCELLED", "PAYMENT_FAILED")
    assert await saga.successful_charges(order["id"]) == []
    assert await saga.available(product) == 5


async def test_cancelling_a_confirmed_order_refunds_and_restocks(
    start_saga: Callable[..., Saga], kafka_bootstrap: str, topics: str
) -> None:
    saga = start_saga()
    product = await saga.product(stock=4, price=1000)
    customer = await saga.customer()
    placed = await saga.place(customer, [(product, 3)])
    await saga.settled(customer, placed["id"])
    assert await saga.available(product) == 1

    async with saga.order.client(customer) as client:
        response = await client.post(f"/api/v1/orders/{placed['id']}/cancel")
    assert response.status_code == 202, response.text
    order = await saga.settled(customer, placed["id"], lambda o: o["status"] == "CANCELLED")
    payments = await collect_events(
        kafka_bootstrap, f"{topics}payment.event", of_order(order["id"], "PaymentRefunded")
    )
    await collect_events(
        kafka_bootstrap, f"{topics}stock.updated", of_order(order["id"], "StockReleased")
    )

    assert order["cancel_reason"] == "CUSTOMER_REQUEST"
    [refunded] = [e for e in payments if e.type == "PaymentRefunded"]
    assert refunded.record.amount == 3000
    assert [r["amount"] for r in await refunds_of(saga, order["id"])] == [3000]
    assert await saga.available(product) == 4


async def test_a_payment_that_lands_after_the_deadline_is_refunded(
    start_saga: Callable[..., Saga], kafka_bootstrap: str, topics: str
) -> None:
    # The charge starts in time (before the deadline less a 1 s margin), then takes 6 s to
    # record: it lands after the order was cancelled (TIMEOUT).
    saga = start_saga(
        ORDER_SAGA_TIMEOUT_SECONDS="3",
        PAYMENT_CHARGE_MARGIN_SECONDS="1",
        PAYMENT_FAULT_DELAY_AFTER_CONFIRM_SECONDS="6",
    )
    product = await saga.product(stock=3, price=700)
    customer = await saga.customer()
    await saga.ready()

    placed = await saga.place(customer, [(product, 1)])
    order = await saga.settled(customer, placed["id"], timeout=30)
    payments = await collect_events(
        kafka_bootstrap,
        f"{topics}payment.event",
        of_order(order["id"], "PaymentSucceeded", "PaymentRefunded"),
        timeout=45,
    )

    assert (order["status"], order["cancel_reason"]) == ("CANCELLED", "TIMEOUT")
    assert [e.type for e in payments if e.subject == order["id"]] == [
        "RiskAssessed",
        "PaymentSucceeded",
        "PaymentRefunded",
    ]
    assert len(await saga.successful_charges(order["id"])) == 1
    assert [r["amount"] for r in await refunds_of(saga, order["id"])] == [700]
    await collect_events(
        kafka_bootstrap, f"{topics}stock.updated", of_order(order["id"], "StockReleased")
    )
    assert await saga.available(product) == 3


async def test_a_payment_service_paused_past_the_deadline_never_charges(
    start_saga: Callable[..., Saga], kafka_bootstrap: str, topics: str, database_url: str
) -> None:
    """Issue 11: the payment service stopped (SIGSTOP) while an order waits for payment, until
    the order is cancelled (TIMEOUT), then let go: it used to charge, then refund at once."""
    saga = start_saga(ORDER_SAGA_TIMEOUT_SECONDS="3", PAYMENT_CHARGE_MARGIN_SECONDS="1")
    product = await saga.product(stock=2, price=8900)
    customer = await saga.customer()
    await saga.ready()

    async with saga.paused(saga.payment):
        placed = await saga.place(customer, [(product, 1)])
        waiting = await saga.settled(
            customer, placed["id"], lambda o: o["status"] not in ("PENDING",), timeout=10
        )
        assert waiting["status"] == "RESERVED"  # stock held, the payment is what it waits for
        order = await saga.settled(customer, placed["id"], timeout=15)
        assert (order["status"], order["cancel_reason"]) == ("CANCELLED", "TIMEOUT")

    async def caught_up() -> dict[str, Any] | None:
        row = await saga.payment_row(order["id"])
        facts = ("order_known", "stock_reserved", "cancelled")
        return row if row and all(row[fact] for fact in facts) else None

    async with asyncio.timeout(30):
        while not (payment := await caught_up()):
            await asyncio.sleep(0.2)
    await collect_events(
        kafka_bootstrap, f"{topics}stock.updated", of_order(order["id"], "StockReleased")
    )

    # No intent was even created: nothing charged, nothing to refund, no e-mail about either.
    assert await saga.payment_intents(order["id"]) == []
    assert await refunds_of(saga, order["id"]) == []
    assert await saga.available(product) == 2
    assert payment["status"] == "EXPIRED"
    assert payment["no_charge_reason"].startswith("no charge: the order's deadline (")

    # `choreo saga` tells the operator why.
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CHOREO_TOPIC_PREFIX": topics,
        "ORDER_DATABASE_URL": str(saga.order.database_url),
        "INVENTORY_DATABASE_URL": str(saga.inventory.database_url),
        "PAYMENT_DATABASE_URL": str(saga.payment.database_url),
        "NOTIFICATION_DATABASE_URL": database_url,  # no notification service here
    }
    traced = await asyncio.to_thread(
        CliRunner().invoke, app, ["saga", order["id"], "--json"], env=env
    )
    assert traced.exit_code == 0, traced.output
    trace = json.loads(traced.stdout)
    types = [record["type"] for record in trace["timeline"]]
    assert sorted(types) == ["OrderCancelled", "OrderCreated", "StockReleased", "StockReserved"]
    [row] = trace["services"]["payment"]["tables"]["order_payments"]
    assert (row["status"], row["no_charge_reason"]) == ("EXPIRED", payment["no_charge_reason"])
    shown = await asyncio.to_thread(CliRunner().invoke, app, ["saga", order["id"]], env=env)
    assert shown.exit_code == 0, shown.output
    payment_view = shown.stdout.split("payment service", 1)[1]
    assert "EXPIRED" in payment_view
    assert "no charge: the order's deadline" in " ".join(payment_view.split())


async def test_two_hundred_concurrent_orders_for_fifty_units_confirm_exactly_fifty(
    start_saga: Callable[..., Saga],
) -> None:
    # Four customers paying with one test card: the risk screening's card velocity limits
    # (the 6th in 10 minutes is held) are raised out of the way.
    saga = start_saga(
        PAYMENT_RISK_CARD_REVIEW_ATTEMPT="100000", PAYMENT_RISK_CARD_DECLINE_ATTEMPT="100000"
    )
    product = await saga.product(stock=50, price=100)
    customers = [await saga.customer() for _ in range(4)]
    lowest_seen = 50
    placing = asyncio.Semaphore(40)

    async def place(n: int) -> tuple[str, str]:
        token = customers[n % len(customers)]
        async with placing:
            return token, (await saga.place(token, [(product, 1)]))["id"]

    async def watch_stock(stop: asyncio.Event) -> None:
        nonlocal lowest_seen
        while not stop.is_set():
            lowest_seen = min(lowest_seen, await saga.available(product))
            await asyncio.sleep(0.1)

    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_stock(stop))
    placed = await asyncio.gather(*(place(n) for n in range(200)))
    settled = [await saga.settled(token, order_id, timeout=120) for token, order_id in placed]
    stop.set()
    await watcher

    outcomes = Counter((o["status"], o["cancel_reason"]) for o in settled)
    assert outcomes == {("CONFIRMED", None): 50, ("CANCELLED", "OUT_OF_STOCK"): 150}
    assert await saga.available(product) == 0
    assert lowest_seen >= 0
