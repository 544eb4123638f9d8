"""Stock reservations driven by saga events on the real broker (docs/saga.md, inventory).

Once a StockReserved/Rejected/Released shows on the topic, the transaction that wrote it (and
the counters it changed) is committed, so counters read through the API right after are final.
To show that a record changed nothing, a probe is published after it under the same Kafka key:
records of one key are applied in order, so once the probe's outcome shows, the record before
it has been applied.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import psycopg

from choreo.events import Event
from choreo.records import Record
from choreo.testing import ServiceProcess, collect_events, eventually, publish

from .conftest import (
    about,
    create_product,
    order_cancelled,
    order_confirmed,
    order_created,
    payment_failed,
    stock_events,
)

PRODUCTS = "/api/v1/products"
OUTCOMES = ("StockReserved", "StockRejected", "StockReleased")


def new_id() -> str:
    return str(uuid.uuid4())


async def counters(admin: httpx.AsyncClient, product_id: str) -> tuple[int, int, int]:
    product = (await admin.get(f"{PRODUCTS}/{product_id}")).json()
    return product["available"], product["reserved"], product["sold"]


def lines_of(event: Event[Record]) -> dict[str, int]:
    return {line.product_id: line.quantity for line in event.record.items}  # type: ignore[attr-defined]


async def test_reserve_reject_confirm_cancel_and_payment_failure(
    inventory: ServiceProcess, admin_token: str, kafka_bootstrap: str, topics: str
) -> None:
    async with inventory.client(admin_token) as admin:
        grinder = (await create_product(admin, stock=10, low_stock_threshold=2))["id"]
        kettle_product = await create_product(
            admin, name="Pour-over kettle", stock=3, low_stock_threshold=2
        )
        kettle = kettle_product["id"]

        # Reserved, duplicate lines of one product summed; the kettle falls to its threshold.
        first = new_id()
        lines = [(grinder, 2), (kettle, 1), (grinder, 1)]
        await publish(kafka_bootstrap, topics, order_created(first, lines))
        events = await stock_events(
            kafka_bootstrap, topics, (first, "StockReserved"), (kettle, "LowStockDetected")
        )
        [reserved] = about(events, first, *OUTCOMES)
        assert lines_of(reserved) == {grinder: 3, kettle: 1}
        assert await counters(admin, grinder) == (7, 3, 0)
        assert await counters(admin, kettle) == (2, 1, 0)
        [low] = about(events, kettle, "LowStockDetected")
        assert (low.record.available, low.record.threshold) == (2, 2)
        assert low.record.product_name == "Pour-over kettle"

        # Rejected: one line is short, so nothing is reserved for any line.
        short = new_id()
        await publish(kafka_bootstrap, topics, order_created(short, [(grinder, 1), (kettle, 5)]))
        events = await stock_events(kafka_bootstrap, topics, (short, "StockRejected"))
        [rejected] = about(events, short, *OUTCOMES)
        assert rejected.record.reason == "OUT_OF_STOCK"
        assert [str(p) for p in rejected.record.unavailable_product_ids] == [kettle]
        assert await counters(admin, grinder) == (7, 3, 0)
        assert await counters(admin, kettle) == (2, 1, 0)

        # Confirmed: the held units are sold. Cancelled after that: the sold units come back.
        await publish(kafka_bootstrap, topics, order_confirmed(first))

        async def sold() -> bool:
            return await counters(admin, grinder) == (7, 0, 3)

        await eventually(sold, what="the confirmed order's units sold")
        assert await counters(admin, kettle) == (2, 0, 1)
        await publish(kafka_bootstrap, topics, order_cancelled(first, "CUSTOMER_REQUEST"))
        events = await stock_events(kafka_bootstrap, topics, (first, "StockReleased"))
        [released] = about(events, first, "StockReleased")
        assert released.record.reason == "CUSTOMER_REQUEST"
        assert lines_of(released) == {grinder: 3, kettle: 1}
        assert await counters(admin, grinder) == (10, 0, 0)
        assert await counters(admin, kettle) == (3, 0, 0)

        # Payment failed: the held units are released, and the OrderCancelled that follows
        # finds nothing more to release (the probe is cancelled under the same key after it).
        unpaid, probe = new_id(), new_id()
        await publish(
            kafka_bootstrap,
            topics,
            order_created(unpaid, [(grinder, 4)]),
            order_created(probe, [(kettle, 1)]),
        )
        await stock_events(
            kafka_bootstrap, topics, (unpaid, "StockReserved"), (probe, "StockReserved")
        )
        assert await counters(admin, grinder) == (6, 4, 0)
        await publish(kafka_bootstrap, topics, payment_failed(unpaid))
        events = await stock_events(kafka_bootstrap, topics, (unpaid, "StockReleased"))
        assert about(events, unpaid, "StockReleased")[0].record.reason == "PAYMENT_FAILED"
        assert await counters(admin, grinder) == (10, 0, 0)
        await publish(
            kafka_bootstrap,
            topics,
            order_cancelled(unpaid, "PAYMENT_FAILED"),
            order_cancelled(probe, "TIMEOUT", key=unpaid),
        )
        events = await stock_events(kafka_bootstrap, topics, (probe, "StockReleased"))
        assert len(about(events, unpaid, "StockReleased")) == 1
        assert await counters(admin, grinder) == (10, 0, 0)
        assert await counters(admin, kettle) == (3, 0, 0)
        assert about(events, grinder, "LowStockDetected") == []


async def test_late_duplicate_and_unknown_orders_reserve_nothing(
    inventory: ServiceProcess, admin_token: str, kafka_bootstrap: str, topics: str
) -> None:
    async with inventory.client(admin_token) as admin:
        grinder = (await create_product(admin, stock=10))["id"]
        cups = (await create_product(admin, stock=5))["id"]
        held = new_id()
        await publish(kafka_bootstrap, topics, order_created(held, [(cups, 2)]))

        # Cancelled before it was created: the late OrderCreated reserves nothing.
        # Delivered twice (same ce_id): reserved once.
        # Past its deadline when it arrives: nothing reserved, nothing said (the order service
        # cancels it, TIMEOUT: StockRejected would give the customer a wrong reason).
        late, duplicate, overdue = new_id(), new_id(), new_id()
        probes = [new_id() for _ in range(4)]
        await publish(
            kafka_bootstrap, topics, order_cancelled(late, "TIMEOUT", previous_status="PENDING")
        )
        # Topics are consumed concurrently: make sure the cancellation is applied before the
        # late OrderCreated is even sent. An anchor order cancelled under the same key lands
        # after it in the same partition, so its release proves the tombstone is written.
        anchor = new_id()
        await publish(kafka_bootstrap, topics, order_created(anchor, [(grinder, 1)]))
        await stock_events(kafka_bootstrap, topics, (anchor, "StockReserved"))
        await publish(kafka_bootstrap, topics, order_cancelled(anchor, "TIMEOUT", key=late))
        await stock_events(kafka_bootstrap, topics, (anchor, "StockReleased"))
        created_twice = order_created(duplicate, [(grinder, 2)])
        await publish(
            kafka_bootstrap,
            topics,
            order_created(late, [(grinder, 3)]),
            order_created(probes[0], [(grinder, 1)], key=late),
            created_twice,
            created_twice,
            order_created(probes[1], [(grinder, 1)], key=duplicate),
            order_created(overdue, [(grinder, 2)], deadline_in=timedelta(seconds=-1)),
            order_created(probes[2], [(grinder, 1)], key=overdue),
        )
        events = await stock_events(
            kafka_bootstrap,
            topics,
            (held, "StockReserved"),
            (probes[0], "StockReserved"),
            (probes[1], "StockReserved"),
            (probes[2], "StockReserved"),
        )
        assert about(events, late, *OUTCOMES) == []
        assert len(about(events, duplicate, *OUTCOMES)) == 1
        assert about(events, overdue, *OUTCOMES) == []
        assert await counters(admin, grinder) == (5, 5, 0)
        assert inventory.database_url is not None
        async with await psycopg.AsyncConnection.connect(inventory.database_url) as db:
            cursor = await db.execute(
                "SELECT status, reason FROM reservations WHERE order_id = %s", (overdue,)
            )
            [(status, reason)] = await cursor.fetchall()
        assert status == "EXPIRED_BEFORE_RESERVATION"
        assert reason.startswith("nothing reserved: the order's deadline (")

        # Its cancellation (TIMEOUT) then releases nothing.
        await publish(
            kafka_bootstrap,
            topics,
            order_cancelled(overdue, "TIMEOUT", previous_status="PENDING"),
            order_created(probes[3], [(grinder, 1)], key=overdue),
        )
        events = await stock_events(kafka_bootstrap, topics, (probes[3], "StockReserved"))
        assert about(events, overdue, *OUTCOMES) == []
        assert await counters(admin, grinder) == (4, 6, 0)

        # A deleted product takes no new orders (UNKNOWN_PRODUCT, like a product that never
        # existed), but the reservations it holds still settle.
        assert (await admin.delete(f"{PRODUCTS}/{cups}")).status_code == 204
        after_delete, unknown = new_id(), new_id()
        await publish(
            kafka_bootstrap,
            topics,
            order_created(after_delete, [(grinder, 1), (cups, 1)]),
            order_created(unknown, [(new_id(), 1)]),
            order_cancelled(held, "CUSTOMER_REQUEST"),
        )
        events = await stock_events(
            kafka_bootstrap,
            topics,
            (after_delete, "StockRejected"),
            (unknown, "StockRejected"),
            (held, "StockReleased"),
            *[(cups, "StockLevelChanged")] * 3,
        )
        for order_id in (after_delete, unknown):
            [rejected] = about(events, order_id, *OUTCOMES)
            assert rejected.record.reason == "UNKNOWN_PRODUCT"
        [rejected] = about(events, after_delete, "StockRejected")
        assert [str(p) for p in rejected.record.unavailable_product_ids] == [cups]
        levels = [e.record.available for e in about(events, cups, "StockLevelChanged")]
        assert levels == [5, 3, 5]
        assert await counters(admin, grinder) == (4, 6, 0)


async def test_concurrent_orders_never_oversell(
    inventory: ServiceProcess, admin_token: str, kafka_bootstrap: str, topics: str
) -> None:
    async with inventory.client(admin_token) as admin:
        product = (await create_product(admin, stock=50, low_stock_threshold=0))["id"]
        orders = [new_id() for _ in range(200)]
        # 200 keys over the topic's partitions, applied concurrently, one unit each.
        await publish(
            kafka_bootstrap, topics, *(order_created(order, [(product, 1)]) for order in orders)
        )

        def answered(events: list[Event[Record]]) -> bool:
            outcomes = sum(e.type in ("StockReserved", "StockRejected") for e in events)
            return outcomes >= len(orders) and bool(about(events, product, "LowStockDetected"))

        events = await collect_events(
            kafka_bootstrap, f"{topics}stock.updated", answered, timeout=60
        )
        answers: dict[str, list[str]] = {}
        for event in events:
            if event.type in ("StockReserved", "StockRejected"):
                answers.setdefault(str(event.record.order_id), []).append(event.type)
        assert set(answers) == set(orders)
        assert all(len(types) == 1 for types in answers.values())
        first_answers = [types[0] for types in answers.values()]
        assert first_answers.count("StockReserved") == 50
        assert first_answers.count("StockRejected") == 150
        assert await counters(admin, product) == (0, 50, 0)
        # Threshold 0: only the reservation that took the last unit is a low-stock alert.
        assert [e.record.available for e in about(events, product, "LowStockDetected")] == [0]


async def test_stock_hovering_at_its_threshold_alerts_once_per_crossing(
    inventory: ServiceProcess, admin_token: str, kafka_bootstrap: str, topics: str
) -> None:
    """The admin hears of low stock when it falls to the threshold, not at every order while
    it hovers there (issue 12.6); once it rose above the threshold, the next fall alerts."""
    async with inventory.client(admin_token) as admin:
        product = (await create_product(admin, stock=6, low_stock_threshold=3))["id"]
        stock = f"{PRODUCTS}/{product}/stock"
        first, second, third, fourth = (new_id() for _ in range(4))

        async def step(event: Event[Record], outcome: str) -> None:
            await publish(kafka_bootstrap, topics, event)
            await stock_events(kafka_bootstrap, topics, (str(event.record.order_id), outcome))

        await step(order_created(first, [(product, 3)]), "StockReserved")  # 3: alert
        await step(order_created(second, [(product, 1)]), "StockReserved")  # 2
        assert (await admin.post(stock, json={"delta": -1})).status_code == 200  # 1
        await step(order_cancelled(second, "CUSTOMER_REQUEST"), "StockReleased")  # 2
        assert (await admin.post(stock, json={"delta": 1})).status_code == 200  # 3
        await step(payment_failed(first), "StockReleased")  # 6: above, re-armed
        await step(order_created(third, [(product, 3)]), "StockReserved")  # 3: alert
        # A threshold lowered below the stock re-arms too.
        lowered = await admin.patch(f"{PRODUCTS}/{product}", json={"low_stock_threshold": 1})
        assert lowered.status_code == 200, lowered.text
        await step(order_created(fourth, [(product, 2)]), "StockReserved")  # 1: alert

        events = await stock_events(kafka_bootstrap, topics, *[(product, "StockLevelChanged")] * 9)
        levels = [e.record.available for e in about(events, product, "StockLevelChanged")]
        assert levels == [6, 3, 2, 1, 2, 3, 6, 3, 1]
        alerts = about(events, product, "LowStockDetected")
        assert [(e.record.available, e.record.threshold) for e in alerts] == [
            (3, 3),
            (3, 3),
            (1, 1),
        ]
