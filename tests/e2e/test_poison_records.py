"""Poison records on `choreo up`: a record no consumer can read is dead-lettered once by each of
its consumers and stops no order; replaying one that still fails adds one entry per failing
consumer per replay, never more."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

from choreo import kafka

from .conftest import ChoreoUp, choreo
from .journey import Gateway

CONSUMERS_OF_ORDER_CREATE = {"inventory_service", "payment_service", "notification_service"}


async def put(
    running: ChoreoUp, key: str, value: bytes, headers: list[tuple[str, bytes | None]], **where: int
) -> None:
    producer = kafka.producer(running.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            "order.create", value, key=key.encode(), headers=headers, **where
        )
    finally:
        await producer.stop()


async def entries_of(running: ChoreoUp, keys: set[str]) -> list[dict[str, Any]]:
    listed = await choreo(running, "dlq", "list")
    return [entry for entry in listed["entries"] if entry["key"] in keys]


async def entries_when(
    running: ChoreoUp, keys: set[str], count: int, timeout: float = 60.0
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(found) < count:
            await asyncio.sleep(0.5)
            found = await entries_of(running, keys)
    await asyncio.sleep(2.0)  # one too many would show by now
    found = await entries_of(running, keys)
    assert len(found) == count, found
    return found


async def partitions_of(running: ChoreoUp, topic: str) -> list[int]:
    producer = kafka.producer(running.bootstrap_servers)
    await producer.start()
    try:
        return sorted(await producer.partitions_for(topic))
    finally:
        await producer.stop()


async def test_a_null_header_on_every_partition_stops_no_order(choreo_up: ChoreoUp) -> None:
    # Issue 11's reproduction: before, each consumer of order.create crash-looped on it.
    partitions = await partitions_of(choreo_up, "order.create")
    keys = {str(uuid.uuid4()) for _ in partitions}
    for partition, key in zip(partitions, sorted(keys), strict=True):
        headers = [("ce_id", b"1"), ("x-note", None)]
        await put(choreo_up, key, b"any value", headers, partition=partition)

    gateway = Gateway(choreo_up)
    customer = await gateway.register()
    order_id = await gateway.order(customer, await gateway.product())

    assert (await gateway.settled(customer, order_id))["status"] == "CONFIRMED"
    entries = await entries_when(choreo_up, keys, len(keys) * len(CONSUMERS_OF_ORDER_CREATE))
    assert Counter((e["key"], e["consumer"]) for e in entries) == {
        (key, consumer): 1 for key in keys for consumer in CONSUMERS_OF_ORDER_CREATE
    }
    shown = await choreo(choreo_up, "dlq", "show", entries[0]["id"])
    assert shown["headers"]["x-note"] is None  # the null header stays null
    assert shown["headers"]["dlq.error.type"] == "EnvelopeError"
    assert not [line for line in choreo_up.lines if "consumer failed" in line]


async def test_replaying_a_record_that_still_fails_adds_one_entry_per_failing_consumer(
    choreo_up: ChoreoUp,
) -> None:
    # Issue 11's second reproduction: before, each replay --all multiplied it by four.
    key = str(uuid.uuid4())
    headers: list[tuple[str, bytes | None]] = [
        ("ce_id", str(uuid.uuid4()).encode()),
        ("ce_type", b"OrderCreated"),
        ("ce_subject", key.encode()),
    ]
    await put(choreo_up, key, b"\xc3\x01" + bytes(8), headers)
    first = await entries_when(choreo_up, {key}, 3)
    assert {e["consumer"] for e in first} == CONSUMERS_OF_ORDER_CREATE

    dry = await choreo(choreo_up, "dlq", "replay", "--all", "--dry-run")
    planned = {e["id"]: e for e in dry["entries"]}
    for entry in first:
        assert planned[entry["id"]]["expect"].startswith("fail: ")
        service = entry["consumer"].removesuffix("_service")
        assert planned[entry["id"]]["to_topic"] == f"{service}.retry"

    await choreo(choreo_up, "dlq", "replay", "--all")
    second = await entries_when(choreo_up, {key}, 6)
    await choreo(choreo_up, "dlq", "replay", "--all")
    third = await entries_when(choreo_up, {key}, 9)

    assert Counter(e["consumer"] for e in third) == {c: 3 for c in CONSUMERS_OF_ORDER_CREATE}
    newest = [e for e in third if e["id"] not in {x["id"] for x in second}]
    assert sorted(e["attempts"] for e in newest) == [3, 3, 3]  # counted across replays
    assert {(e["original_topic"], e["original_offset"]) for e in third} == {
        ("order.create", first[0]["original_offset"])
    }
