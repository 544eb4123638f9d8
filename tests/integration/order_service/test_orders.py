"""The order service as a process, through its HTTP API, with real PostgreSQL and Kafka.

Saga events of the other services are published by the tests; prices come from a stand-in of
the inventory service's lookup.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from choreo import records
from choreo.auth import SigningKey
from choreo.events import Event
from choreo.testing import StartService, collect_events, eventually, publish

from .conftest import (
    StandInInventory,
    payment_failed,
    payment_succeeded,
    stock_rejected,
    stock_reserved,
    timeline_types,
    wait_for_status,
    wait_for_timeline,
)


def by_subject(events: list[Event], event_type: str) -> dict[str, Event]:
    return {e.subject: e for e in events if e.type == event_type}


async def records_in(bootstrap: str, topic: str) -> int:
    reader = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap)
    await reader.start()
    try:
        partitions = list(reader.assignment())
        assert partitions, f"{topic} has no partitions"
        return sum((await reader.end_offsets(partitions)).values())
    finally:
        await reader.stop()


SagaSamples = dict[tuple[str, str, str], float]


async def saga_samples(api: httpx.AsyncClient) -> SagaSamples:
    """The service's saga metrics: (sample name, outcome, reason) -> value."""
    response = await api.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, sample.labels["outcome"], sample.labels["reason"]): sample.value
        for family in text_string_to_metric_families(response.text)
        if family.name in ("choreo_saga_outcomes", "choreo_saga_duration_seconds")
        for sample in family.samples
        if sample.name.endswith(("_total", "_count", "_sum"))
    }


async def saga_samples_once(
    api: httpx.AsyncClient, check: Callable[[SagaSamples], bool]
) -> SagaSamples:
    """The saga metrics once `check` holds (they move just after the step's commit)."""
    samples: SagaSamples = {}

    async def holds() -> bool:
        nonlocal samples
        samples = await saga_samples(api)
        return check(samples)

    await eventually(holds, "the saga metrics", timeout=10)
    return samples


async def place(api: httpx.AsyncClient, *lines: tuple[str, int], **extra: Any) -> dict[str, Any]:
    body = {"items": [{"product_id": p, "quantity": q} for p, q in lines], **extra}
    response = await api.post("/api/v1/orders", json=body)
    assert response.status_code == 202, response.text
    order: dict[str, Any] = response.json()
    return order


async def test_the_saga_decides_each_order(
    start_service: StartService,
    inventory: StandInInventory,
    signing_key: SigningKey,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    mug = inventory.add("Mug", 1250)
    tea = inventory.add("Tea", 399)
    service = start_service("order", INVENTORY_SERVICE_URL=inventory.url)
    alice = str(uuid.uuid4())
    admin = signing_key.issue(str(uuid.uuid4()), roles=["user", "admin"])

    async with service.client(signing_key.issue(alice)) as api, service.client(admin) as ops:
        response = await api.post(
            "/api/v1/orders",
            json={
                "items": [
                    {"product_id": mug, "quantity": 2},
                    {"product_id": tea, "quantity": 1},
                    {"product_id": mug, "quantity": 1},
                ],
                "payment_method_id": "pm_card",
            },
        )
        assert response.status_code == 202, response.text
        paid = response.json()
        assert response.headers["location"] == f"/api/v1/orders/{paid['id']}"
        assert paid["status"] == "PENDING"
        assert [
            (i["product_id"], i["name"], i["quantity"], i["unit_price"]) for i in paid["items"]
        ] == [
            (mug, "Mug", 3, 1250),
            (tea, "Tea", 1, 399),
        ]
        assert (paid["total"], paid["currency"]) == (3 * 1250 + 399, "USD")
        deadline = datetime.fromisoformat(paid["deadline"])
        assert 55 <= (deadline - datetime.fromisoformat(paid["created_at"])).total_seconds() <= 60
        assert (await api.get(response.headers["location"])).json() == paid

        rejected = await place(api, (tea, 5))
        paid_first = await place(api, (mug, 1))
        declined = await place(api, (tea, 1))

        created = by_subject(
            await collect_events(
                kafka_bootstrap,
                f"{topics}order.create",
                until=lambda seen: len(by_subject(seen, "OrderCreated")) == 4,
            ),
            "OrderCreated",
        )
        written = created[paid["id"]].record
        assert dataclasses.replace(written, deadline=deadline, created_at=deadline) == (
            records.OrderCreated(
                order_id=paid["id"],
                user_id=alice,
                items=(
                    records.OrderLine(product_id=mug, quantity=3, unit_price=1250),
                    records.OrderLine(product_id=tea, quantity=1, unit_price=399),
                ),
                total_amount=4149,
                currency="USD",
                payment_method_id="pm_card",
                deadline=deadline,
                created_at=deadline,
            )
        )
        assert created[paid["id"]].record.deadline == deadline

        # Reserved, then paid: CONFIRMED. Rejected stock, declined card: CANCELLED.
        await publish(
            kafka_bootstrap,
            topics,
            stock_reserved(paid),
            stock_rejected(rejected),
            payment_succeeded(paid_first),
            stock_reserved(declined),
        )
        await wait_for_status(api, paid["id"], "RESERVED")
        await wait_for_status(api, declined["id"], "RESERVED")
        await publish(kafka_bootstrap, topics, payment_succeeded(paid), payment_failed(declined))
        assert (await wait_for_status(api, paid["id"], "CONFIRMED"))["charged"] is True
        cancelled = await wait_for_status(api, rejected["id"], "CANCELLED")
        assert cancelled["cancel_reason"] == "OUT_OF_STOCK"
        cancelled = await wait_for_status(api, declined["id"], "CANCELLED")
        assert cancelled["cancel_reason"] == "PAYMENT_FAILED"

        # A payment that overtook its stock reservation confirms; the late reservation changes
        # nothing.
        await wait_for_status(api, paid_first["id"], "CONFIRMED")
        await publish(kafka_bootstrap, topics, stock_reserved(paid_first))
        await wait_for_timeline(api, paid_first["id"], "StockReserved")
        assert (await api.get(f"/api/v1/orders/{paid_first['id']}")).json()["status"] == "CONFIRMED"

        # The customer withdraws a confirmed order: payment will refund it.
        response = await api.post(f"/api/v1/orders/{paid['id']}/cancel")
        assert response.status_code == 202, response.text
        assert (response.json()["status"], response.json()["cancel_reason"]) == (
            "CANCELLED",
            "CUSTOMER_REQUEST",
        )
        response = await api.post(f"/api/v1/orders/{paid['id']}/cancel")
        assert (response.status_code, response.json()["error"]["code"]) == (409, "not_cancellable")

        # Each saga decided once; the customer's later cancellation decided no saga.
        outcomes = {
            ("confirmed", ""): 2.0,
            ("cancelled", "OUT_OF_STOCK"): 1.0,
            ("cancelled", "PAYMENT_FAILED"): 1.0,
        }
        samples = await saga_samples_once(
            api,
            lambda found: (
                {labels: found.get(("choreo_saga_outcomes_total", *labels)) for labels in outcomes}
                == outcomes
            ),
        )
        assert not any(reason == "CUSTOMER_REQUEST" for _, _, reason in samples)
        for (outcome, reason), count in outcomes.items():
            assert samples["choreo_saga_duration_seconds_count", outcome, reason] == count
            assert 0 < samples["choreo_saga_duration_seconds_sum", outcome, reason] < 60 * count

        decided = await collect_events(
            kafka_bootstrap,
            f"{topics}order.event",
            until=lambda seen: len(seen) >= 5,
        )
        assert sorted(by_subject(decided, "OrderConfirmed")) == sorted(
            [paid["id"], paid_first["id"]]
        )
        cancellations = {
            e.subject: (e.record.reason, e.record.previous_status, e.record.charged)
            for e in decided
            if e.type == "OrderCancelled"
        }
        assert cancellations == {
            rejected["id"]: ("OUT_OF_STOCK", "PENDING", False),
            declined["id"]: ("PAYMENT_FAILED", "RESERVED", False),
            paid["id"]: ("CUSTOMER_REQUEST", "CONFIRMED", True),
        }

        timeline = (await api.get(f"/api/v1/orders/{paid['id']}/timeline")).json()
        assert [(e["type"], e["direction"], e["source"]) for e in timeline["items"]] == [
            ("OrderCreated", "emitted", "order_service"),
            ("StockReserved", "consumed", "inventory_service"),
            ("PaymentSucceeded", "consumed", "payment_service"),
            ("OrderConfirmed", "emitted", "order_service"),
            ("OrderCancelled", "emitted", "order_service"),
        ]
        emitted_ids = {e.id for e in decided} | {e.id for e in created.values()}
        assert {e["event_id"] for e in timeline["items"] if e["direction"] == "emitted"} <= (
            emitted_ids
        )

        # Fulfilment, by admins only, one step at a time.
        status_path = f"/api/v1/orders/{paid_first['id']}/status"
        response = await api.patch(status_path, json={"status": "PROCESSING"})
        assert response.status_code == 403
        response = await ops.patch(status_path, json={"status": "COMPLETED"})
        assert (response.status_code, response.json()["error"]["code"]) == (
            409,
            "invalid_status_transition",
        )
        for status in ("PROCESSING", "COMPLETED"):
            response = await ops.patch(status_path, json={"status": status})
            assert (response.status_code, response.json()["status"]) == (200, status)
        response = await ops.patch(status_path, json={"status": "PROCESSING"})
        assert response.status_code == 409
        response = await ops.patch(
            f"/api/v1/orders/{declined['id']}/status", json={"status": "PROCESSING"}
        )
        assert response.status_code == 409
        response = await api.post(f"/api/v1/orders/{paid_first['id']}/cancel")
        assert (response.status_code, response.json()["error"]["code"]) == (409, "not_cancellable")


async def test_an_undecided_order_times_out_and_a_late_payment_only_marks_it_charged(
    start_service: StartService,
    inventory: StandInInventory,
    signing_key: SigningKey,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    mug = inventory.add("Mug", 1250)
    service = start_service(
        "order", INVENTORY_SERVICE_URL=inventory.url, ORDER_SAGA_TIMEOUT_SECONDS="2"
    )
    async with service.client(signing_key.issue(str(uuid.uuid4()))) as api:
        order = await place(api, (mug, 1))
        timed_out = await wait_for_status(api, order["id"], "CANCELLED", timeout=10)
        assert (timed_out["cancel_reason"], timed_out["charged"]) == ("TIMEOUT", False)
        timeout = ("cancelled", "TIMEOUT")
        samples = await saga_samples_once(
            api, lambda found: found.get(("choreo_saga_outcomes_total", *timeout)) == 1
        )
        assert samples["choreo_saga_duration_seconds_count", *timeout] == 1
        assert samples["choreo_saga_duration_seconds_sum", *timeout] >= 2  # the saga timeout

        cancelled = await collect_events(
            kafka_bootstrap,
            f"{topics}order.event",
            until=lambda seen: any(e.subject == order["id"] for e in seen),
        )
        assert [(e.type, e.record.reason, e.record.charged) for e in cancelled] == [
            ("OrderCancelled", "TIMEOUT", False)
        ]

        # Events of an order this service never placed belong to another system: ignored.
        stranger = {**order, "id": str(uuid.uuid4())}
        await publish(
            kafka_bootstrap, topics, payment_succeeded(stranger), stock_reserved(stranger)
        )
        await publish(kafka_bootstrap, topics, payment_succeeded(order), stock_reserved(order))
        timeline = await wait_for_timeline(api, order["id"], "StockReserved")
        await wait_for_timeline(api, order["id"], "PaymentSucceeded")
        after = (await api.get(f"/api/v1/orders/{order['id']}")).json()
        assert (after["status"], after["cancel_reason"], after["charged"]) == (
            "CANCELLED",
            "TIMEOUT",
            True,
        )
        timeline = (await api.get(f"/api/v1/orders/{order['id']}/timeline")).json()
        assert timeline_types(timeline)[:2] == ["OrderCreated", "OrderCancelled"]
        assert sorted(timeline_types(timeline)[2:]) == ["PaymentSucceeded", "StockReserved"]
        assert (await api.get(f"/api/v1/orders/{stranger['id']}")).status_code == 404
        assert await records_in(kafka_bootstrap, f"{topics}order.dlq") == 0


async def test_placing_reading_and_listing_orders(
    start_service: StartService,
    inventory: StandInInventory,
    signing_key: SigningKey,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    mug = inventory.add("Mug", 1250)
    tea = inventory.add("Tea", 399)
    kettle = inventory.add("Kettle", 4000, currency="EUR")
    service = start_service("order", INVENTORY_SERVICE_URL=inventory.url)
    alice_token = signing_key.issue(str(uuid.uuid4()))
    bob_token = signing_key.issue(str(uuid.uuid4()))
    admin = signing_key.issue(str(uuid.uuid4()), roles=["user", "admin"])
    one_mug = {"items": [{"product_id": mug, "quantity": 1}]}

    async with (
        service.client(alice_token) as alice,
        service.client(bob_token) as bob,
        service.client(admin) as ops,
        service.client() as anonymous,
    ):
        # The same request with the same key, again or concurrently: one order.
        key = {"Idempotency-Key": "checkout-1"}
        first = await alice.post("/api/v1/orders", json=one_mug, headers=key)
        again = await alice.post("/api/v1/orders", json=one_mug, headers=key)
        assert (first.status_code, again.status_code) == (202, 202)
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["location"] == first.headers["location"]

        racing_key = {"Idempotency-Key": "checkout-2"}
        inventory.lookup_delay = 0.5  # every request prices before the first one commits
        racing = await asyncio.gather(
            *(alice.post("/api/v1/orders", json=one_mug, headers=racing_key) for _ in range(8))
        )
        inventory.lookup_delay = 0.0
        assert {r.status_code for r in racing} == {202}
        assert len({r.json()["id"] for r in racing}) == 1

        reused = await alice.post(
            "/api/v1/orders", json={"items": [{"product_id": tea, "quantity": 1}]}, headers=key
        )
        assert (reused.status_code, reused.json()["error"]["code"]) == (
            422,
            "idempotency_key_reused",
        )
        # Keys are per user: Bob's "checkout-1" is his own.
        bobs = await bob.post("/api/v1/orders", json=one_mug, headers=key)
        assert bobs.status_code == 202
        assert bobs.json()["id"] != first.json()["id"]

        created = await collect_events(
            kafka_bootstrap,
            f"{topics}order.create",
            until=lambda seen: (
                {first.json()["id"], racing[0].json()["id"]} <= {e.subject for e in seen}
            ),
        )
        subjects = [e.subject for e in created]
        assert subjects.count(first.json()["id"]) == 1
        assert subjects.count(racing[0].json()["id"]) == 1

        # Orders the catalog cannot price are refused, naming what is wrong.
        unknown = str(uuid.uuid4())
        response = await alice.post(
            "/api/v1/orders",
            json={
                "items": [
                    {"product_id": mug, "quantity": 1},
                    {"product_id": unknown, "quantity": 1},
                ]
            },
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "unknown_products"
        assert response.json()["error"]["details"]["product_ids"] == [unknown]
        del inventory.products[tea]
        response = await alice.post(
            "/api/v1/orders", json={"items": [{"product_id": tea, "quantity": 1}]}
        )
        assert (response.status_code, response.json()["error"]["code"]) == (
            422,
            "unknown_products",
        )
        assert tea in response.json()["error"]["message"]
        response = await alice.post(
            "/api/v1/orders",
            json={
                "items": [{"product_id": mug, "quantity": 1}, {"product_id": kettle, "quantity": 1}]
            },
        )
        assert (response.status_code, response.json()["error"]["code"]) == (
            422,
            "mixed_currencies",
        )

        # Requests out of shape are 422, never 500.
        for body in (
            {"items": []},
            {"items": [{"product_id": mug, "quantity": 0}]},
            {"items": [{"product_id": mug, "quantity": 101}]},
            {"items": [{"product_id": mug, "quantity": 60}, {"product_id": mug, "quantity": 41}]},
            {"items": [{"product_id": str(uuid.uuid4()), "quantity": 1}] * 51},
            {"items": [{"product_id": "not-a-uuid", "quantity": 1}]},
            {"items": "mug"},
            {**one_mug, "payment_method_id": "pm\u0000"},
            [],
        ):
            response = await alice.post("/api/v1/orders", json=body)
            assert response.status_code == 422, (body, response.text)
        response = await alice.post(
            "/api/v1/orders", json=one_mug, headers={"Idempotency-Key": "k" * 256}
        )
        assert response.status_code == 422
        assert (await anonymous.post("/api/v1/orders", json=one_mug)).status_code == 401

        # Another user's order does not exist for Bob.
        order_path = first.headers["location"]
        for response in (
            await bob.get(order_path),
            await bob.get(f"{order_path}/timeline"),
            await bob.post(f"{order_path}/cancel"),
        ):
            assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")
        assert (await alice.get(order_path)).json()["status"] == "PENDING"

        # Lists: own orders newest first, page by page; admins see everyone's.
        third = await place(alice, (mug, 2))
        pages: list[list[str]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = (await alice.get("/api/v1/orders", params=params)).json()
            pages.append([o["id"] for o in page["items"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == [[third["id"], racing[0].json()["id"]], [first.json()["id"]]]
        response = await alice.get("/api/v1/orders", params={"cursor": "garbage"})
        assert response.status_code == 422
        assert (await alice.get("/api/v1/orders", params={"limit": 101})).status_code == 422

        assert (await alice.get("/api/v1/admin/orders")).status_code == 403
        everyone = (await ops.get("/api/v1/admin/orders")).json()
        assert len(everyone["items"]) == 4
        await alice.post(f"/api/v1/orders/{third['id']}/cancel")
        cancelled = (await ops.get("/api/v1/admin/orders", params={"status": "CANCELLED"})).json()
        assert [o["id"] for o in cancelled["items"]] == [third["id"]]
        response = await ops.get("/api/v1/admin/orders", params={"status": "LOST"})
        assert response.status_code == 422

        # Without the inventory service nothing can be priced: 503, and when to come back.
        await inventory.stop()
        response = await alice.post("/api/v1/orders", json=one_mug)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "inventory_unavailable"
        assert int(response.headers["retry-after"]) > 0
