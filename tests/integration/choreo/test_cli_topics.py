"""`choreo topics` against the real broker: a stopped service's group lags, then catches up."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from choreo import kafka
from choreo.avro import default_store
from choreo.cli import app
from choreo.events import Event, headers_of
from choreo.records import OrderCreated
from choreo.testing import StartService, publish
from choreo.testing import records as make

runner = CliRunner()


async def choreo(env: dict[str, str], *arguments: str) -> Result:
    """Run the CLI in-process (in a thread: it runs an event loop of its own)."""
    return await asyncio.to_thread(runner.invoke, app, list(arguments), env=env)


def order_created() -> Event[OrderCreated]:
    created = make.order_created(items=make.order_lines(1, unit_price=500))
    return dataclasses.replace(created, source="/order_service")


async def publish_in_one_batch(bootstrap: str, prefix: str, *events: Event) -> None:
    """Put `events` on partition 0 of their topics in one produce batch, as a relay would."""
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        store = default_store()
        sent = [
            await producer.send(
                f"{prefix}{event.topic}",
                store.encode(event.type, event.record.to_avro()),
                key=event.subject.encode(),
                headers=[(k, v.encode()) for k, v in headers_of(event).items()],
                partition=0,
            )
            for event in events
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def lag_of(report: dict[str, Any], group: str, topic: str) -> dict[str, Any]:
    (found,) = [g for g in report["groups"] if g["group"] == group]
    (lag,) = [t for t in found["topics"] if t["topic"] == topic]
    return lag


async def report_when(
    env: dict[str, str], done: Callable[[dict[str, Any]], bool], timeout: float = 40.0
) -> dict[str, Any]:
    report: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = await choreo(env, "topics", "--json")
                assert result.exit_code == 0, result.output
                report = json.loads(result.stdout)
                if done(report):
                    return report
                await asyncio.sleep(0.5)
    except TimeoutError:
        pytest.fail(f"not so in {timeout} s; last report: {json.dumps(report['groups'])}")


async def test_a_stopped_services_group_lags_and_catches_up_when_it_is_back(
    start_service: StartService, kafka_bootstrap: str, topics: str
) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CHOREO_TOPIC_PREFIX": topics}
    group, created = f"{topics}inventory_service", f"{topics}order.create"
    inventory = start_service("inventory")
    await publish(kafka_bootstrap, topics, order_created())
    await report_when(env, lambda r: lag_of(r, group, created)["committed"] == 1)
    inventory.stop()

    # One batch: Tansu's ListOffsets would count it as one record; the end offsets must not.
    await publish_in_one_batch(kafka_bootstrap, topics, *(order_created() for _ in range(3)))
    behind = await report_when(env, lambda r: lag_of(r, group, created)["end_offset"] == 4)

    lag = lag_of(behind, group, created)
    assert (lag["committed"], lag["end_offset"], lag["lag"]) == (1, 4, 3)
    assert sum(p["lag"] for p in lag["partitions"]) == 3
    assert lag["partitions"][0]["lag"] >= 3
    assert len(lag["partitions"]) == 3
    (topic,) = [t for t in behind["topics"] if t["topic"] == created]
    assert (topic["partitions"], topic["end_offset"], topic["records"]) == (3, 4, 4)
    assert sum(p["end_offset"] for p in topic["end_offsets"]) == 4
    assert not any(t["topic"].startswith("__") for t in behind["topics"])
    # Every topic of this test is listed, and nothing of other tests' prefixes.
    assert all(t["topic"].startswith(topics) for t in behind["topics"])
    assert {f"{topics}order.create", f"{topics}inventory.dlq"} <= {
        t["topic"] for t in behind["topics"]
    }
    shown = await choreo(env, "topics")
    assert shown.exit_code == 0
    (row,) = [line for line in shown.stdout.splitlines() if group in line and created in line]
    assert row.replace("│", " ").split() == [group, created, "1", "4", "3"]

    start_service("inventory")
    caught_up = await report_when(env, lambda r: lag_of(r, group, created)["lag"] == 0)

    assert lag_of(caught_up, group, created)["committed"] == 4
