"""`choreo saga` on real orders driven through inventory, payment and order (real PostgreSQL,
the real broker, localstripe): the events in order and each service's view of the order."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from choreo.auth import SigningKey
from choreo.cli import app
from choreo.testing import StartService, free_port
from tests.integration.saga.conftest import DECLINED_CARD, Saga

runner = CliRunner()


async def choreo(env: dict[str, str], *arguments: str) -> Result:
    """Run the CLI in-process (in a thread: it runs an event loop of its own)."""
    return await asyncio.to_thread(runner.invoke, app, list(arguments), env=env)


@pytest.fixture
def saga(start_service: StartService, signing_key: SigningKey, stripe_api_base: str) -> Saga:
    inventory = start_service("inventory")
    payment = start_service("payment")
    order = start_service("order")
    return Saga(inventory, payment, order, signing_key, stripe_api_base)


async def trace_when(
    env: dict[str, str],
    order_id: str,
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 30.0,
) -> dict[str, Any]:
    """`choreo saga ORDER_ID --json`, again until `done(trace)`."""
    trace: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = await choreo(env, "saga", order_id, "--json")
                assert result.exit_code == 0, result.output
                trace = json.loads(result.stdout)
                if done(trace):
                    return trace
                await asyncio.sleep(0.5)
    except TimeoutError:
        types = [record["type"] for record in trace.get("timeline", [])]
        pytest.fail(f"saga of {order_id} not as expected in {timeout} s; events {types}")


def types_of(trace: dict[str, Any]) -> list[str]:
    return [record["type"] for record in trace["timeline"]]


def table(trace: dict[str, Any], service: str, name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = trace["services"][service]["tables"][name]
    return rows


async def test_saga_shows_each_orders_events_in_order_and_every_services_view(
    saga: Saga, kafka_bootstrap: str, topics: str, database_url: str
) -> None:
    product, scarce = await saga.product(stock=5, price=2500), await saga.product(stock=1)
    good_card, bad_card = await saga.customer(), await saga.customer(card=DECLINED_CARD)
    placed = [
        await saga.place(good_card, [(product, 2)]),
        await saga.place(good_card, [(scarce, 2)]),
        await saga.place(bad_card, [(product, 1)]),
    ]
    tokens = [good_card, good_card, bad_card]
    confirmed, out_of_stock, declined = await asyncio.gather(
        *(saga.settled(token, order["id"]) for token, order in zip(tokens, placed, strict=True))
    )
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CHOREO_TOPIC_PREFIX": topics,
        "ORDER_DATABASE_URL": str(saga.order.database_url),
        "INVENTORY_DATABASE_URL": str(saga.inventory.database_url),
        "PAYMENT_DATABASE_URL": str(saga.payment.database_url),
        # A database without the notification service's tables: its view says so.
        "NOTIFICATION_DATABASE_URL": database_url,
    }

    happy = await trace_when(
        env,
        confirmed["id"],
        lambda t: table(t, "inventory", "reservations")[0]["status"] == "COMMITTED",
    )
    rejected = await trace_when(env, out_of_stock["id"], lambda t: "OrderCancelled" in types_of(t))
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/notifications"
    failed = await trace_when(
        {**env, "NOTIFICATION_DATABASE_URL": unreachable},
        declined["id"],
        lambda t: {"StockReleased", "OrderCancelled"} <= set(types_of(t)),
    )

    assert (confirmed["status"], out_of_stock["cancel_reason"], declined["cancel_reason"]) == (
        "CONFIRMED",
        "OUT_OF_STOCK",
        "PAYMENT_FAILED",
    )
    assert types_of(happy) == [
        "OrderCreated",
        "StockReserved",
        "RiskAssessed",
        "PaymentSucceeded",
        "OrderConfirmed",
    ]
    assert [r["headers"]["ce_source"] for r in happy["timeline"]] == [
        "/order_service",
        "/inventory_service",
        "/payment_service",
        "/payment_service",
        "/order_service",
    ]
    assert [r["topic"] for r in happy["timeline"]] == [
        f"{topics}order.create",
        f"{topics}stock.updated",
        f"{topics}payment.event",
        f"{topics}payment.event",
        f"{topics}order.event",
    ]
    times = [r["timestamp"] for r in happy["timeline"]]
    assert times == sorted(times)
    assert all(r["key"] == confirmed["id"] for r in happy["timeline"])
    assert happy["status"] == "CONFIRMED"
    assert happy["timeline"][2]["summary"] == "APPROVE, score 0 (no rule)"
    assert happy["timeline"][3]["summary"].startswith("charged 50.00 USD (pi_")
    (order_row,) = table(happy, "order", "orders")
    assert (order_row["status"], order_row["total_amount"]) == ("CONFIRMED", 5000)
    assert [line["quantity"] for line in table(happy, "order", "order_items")] == [2]
    seen_by_order = {row["event_type"] for row in table(happy, "order", "order_timeline")}
    assert {"StockReserved", "PaymentSucceeded", "OrderConfirmed"} <= seen_by_order
    assert [line["quantity"] for line in table(happy, "inventory", "reservation_lines")] == [2]
    (screened,) = table(happy, "payment", "risk_assessments")
    assert (screened["decision"], screened["counters"]["card_attempts"]) == ("APPROVE", 1)
    (charge,) = table(happy, "payment", "order_payments")
    assert (charge["status"], charge["amount"], charge["refunded_amount"]) == ("SUCCEEDED", 5000, 0)
    assert charge["provider_payment_id"].startswith("pi_")
    notification = happy["services"]["notification"]
    assert notification["error"] is None
    assert notification["found"] is False
    assert "no such table" in notification["problems"]["deliveries"]
    assert happy["dead_letters"] == []

    assert types_of(rejected) == ["OrderCreated", "StockRejected", "OrderCancelled"]
    assert rejected["timeline"][1]["value"]["reason"] == "OUT_OF_STOCK"
    assert table(rejected, "order", "orders")[0]["cancel_reason"] == "OUT_OF_STOCK"
    assert table(rejected, "inventory", "reservations")[0]["status"] == "REJECTED"
    (untouched,) = table(rejected, "payment", "order_payments")
    assert (untouched["status"], untouched["provider_payment_id"]) == ("NONE", None)

    # Inventory (release) and order (cancel) both react to PaymentFailed, in either order.
    assert types_of(failed)[:4] == [
        "OrderCreated",
        "StockReserved",
        "RiskAssessed",
        "PaymentFailed",
    ]
    assert sorted(types_of(failed)[4:]) == ["OrderCancelled", "StockReleased"]
    assert failed["timeline"][3]["value"]["decline_code"] == "card_declined"
    assert table(failed, "order", "orders")[0]["cancel_reason"] == "PAYMENT_FAILED"
    assert table(failed, "inventory", "reservations")[0]["status"] == "RELEASED"
    (refused,) = table(failed, "payment", "order_payments")
    assert (refused["status"], refused["decline_code"]) == ("FAILED", "card_declined")
    assert failed["services"]["notification"]["error"].startswith("unreachable")

    people = await choreo(env, "saga", declined["id"])
    assert people.exit_code == 0, people.output
    lines = people.stdout.splitlines()
    assert lines[0].split() == ["order", declined["id"], "CANCELLED"]
    timeline_rows = [line for line in lines if f"{topics}" in line and "│" in line]
    assert [row.split("│")[3].strip() for row in timeline_rows] == types_of(failed)
    assert any("card_declined" in row for row in timeline_rows)
    assert "payment service" in people.stdout
    assert "no such table (database not migrated?)" in people.stdout

    unknown_id = str(uuid.uuid4())
    unknown = await choreo(env, "saga", unknown_id)
    assert unknown.exit_code == 1
    assert unknown.stdout == ""
    (line,) = unknown.stderr.strip().splitlines()
    assert line.startswith(f"error: no order {unknown_id}: no record of it on 15 topics")
