"""`choreo tail` against the real broker: decoded history, filters, following, clear errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from choreo import kafka
from choreo.cli import app
from choreo.events import Event
from choreo.records import OrderCreated, StockRejected, StockReserved
from choreo.testing import free_port, publish
from choreo.testing import records as make

runner = CliRunner()
CHOREO = Path(sys.executable).parent / "choreo"


async def choreo(env: dict[str, str], *arguments: str) -> Result:
    """Run the CLI in-process (in a thread: it runs an event loop of its own)."""
    return await asyncio.to_thread(runner.invoke, app, list(arguments), env=env)


def json_lines(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def order_created(order_id: str | None = None) -> Event[OrderCreated]:
    return make.order_created(order_id=order_id, items=make.order_lines(3, unit_price=700))


def stock_rejected(order_id: str) -> Event[StockRejected]:
    return make.stock_rejected(
        order_id=order_id, reason="OUT_OF_STOCK", unavailable_product_ids=[str(uuid.uuid4())]
    )


def stock_reserved(order_id: str) -> Event[StockReserved]:
    return make.stock_reserved(order_id=order_id)


async def send_raw(bootstrap: str, topic: str, value: bytes, **options: Any) -> None:
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, **options)
    finally:
        await producer.stop()


async def test_tail_prints_decoded_history_and_filters_it(
    kafka_bootstrap: str, topics: str
) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CHOREO_TOPIC_PREFIX": topics}
    orders = [order_created() for _ in range(6)]
    await publish(kafka_bootstrap, topics, *orders)
    await send_raw(
        kafka_bootstrap,
        f"{topics}order.create",
        b"\x00not avro at all",
        key=b"broken",
        headers=[("ce_type", b"OrderCreated")],
    )
    two_days_ago = int((datetime.now(UTC) - timedelta(days=2)).timestamp() * 1000)
    for key, timestamp in ((b"old", two_days_ago), (b"new", None)):
        await send_raw(
            kafka_bootstrap, f"{topics}order.event", b"\x00", key=key, timestamp_ms=timestamp
        )
    reserved, rejected = str(uuid.uuid4()), str(uuid.uuid4())
    await publish(kafka_bootstrap, topics, stock_reserved(reserved), stock_rejected(rejected))

    first_five = json_lines(
        await choreo(env, "tail", "order.create", "--from-beginning", "--json", "--limit", "5")
    )
    everything = json_lines(await choreo(env, "tail", "order.create", "--from-beginning", "--json"))
    by_key = json_lines(
        await choreo(env, "tail", "order.create", "--from-beginning", "--json", "--key", "broken")
    )
    recent = json_lines(await choreo(env, "tail", "order.event", "--since", "1d", "--json"))
    rejections = json_lines(
        await choreo(
            env, "tail", "stock.updated", "--since", "1h", "--type", "stockrejected", "--json"
        )
    )
    people = await choreo(env, "tail", "order.create", "--from-beginning", "--limit", "1")

    assert len(first_five) == 5
    for record in first_five:
        assert record["topic"] == f"{topics}order.create"
        assert record["type"] == "OrderCreated"
        assert record["value"]["order_id"] == record["key"] == record["headers"]["ce_subject"]
        assert record["headers"]["ce_source"] == "/order_service"
        assert isinstance(record["partition"], int)
        assert isinstance(record["offset"], int)
        assert record["value"]["items"][0]["quantity"] == 3
    assert [r["timestamp"] for r in first_five] == sorted(r["timestamp"] for r in first_five)
    assert {r["key"] for r in first_five} <= {e.subject for e in orders}

    assert len(everything) == 7
    (broken,) = by_key
    assert broken["key"] == "broken"
    assert broken["value"] is None
    assert broken["type"] == "OrderCreated"
    assert "UndecodableError" in broken["error"]
    assert broken["raw_hex"].startswith("00 6e 6f 74")
    assert [r["key"] for r in recent] == ["new"]
    assert [(r["type"], r["key"]) for r in rejections] == [("StockRejected", rejected)]
    assert rejections[0]["value"]["reason"] == "OUT_OF_STOCK"

    assert people.exit_code == 0
    first_line = people.stdout.splitlines()[0]
    assert first_line.startswith(f"{topics}order.create[")
    assert "OrderCreated" in first_line
    assert '"order_id":' in people.stdout


async def test_tail_without_history_waits_for_new_records_only(
    kafka_bootstrap: str, topics: str
) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CHOREO_TOPIC_PREFIX": topics}
    await publish(kafka_bootstrap, topics, order_created())

    result = await choreo(env, "tail", "order.create", "--wait", "0.5")

    assert result.exit_code == 0
    assert result.stdout == ""
    assert "no new records in 0.5 s" in result.stderr


async def test_follow_streams_records_published_after_it_started_until_ctrl_c(
    kafka_bootstrap: str, topics: str
) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CHOREO_TOPIC_PREFIX": topics}
    await publish(kafka_bootstrap, topics, order_created())  # history: not shown
    process = await asyncio.create_subprocess_exec(
        str(CHOREO),
        *("tail", "order.create", "--follow", "--json"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        async with asyncio.timeout(30):
            ready = await process.stderr.readline()
            assert b"following" in ready, ready
            new = order_created()
            await publish(kafka_bootstrap, topics, new)
            line = await process.stdout.readline()
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(15):
            rest, errors = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    record = json.loads(line)
    assert (record["type"], record["key"]) == ("OrderCreated", new.subject)
    assert record["value"]["order_id"] == new.subject
    assert process.returncode == 0
    assert rest == b""
    assert b"Traceback" not in errors


async def test_unknown_topics_and_unreachable_brokers_are_one_line_errors(
    kafka_bootstrap: str, topics: str
) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CHOREO_TOPIC_PREFIX": topics}
    nowhere = {**env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}

    unknown = await choreo(env, "tail", "order.created", "--from-beginning")
    unreachable = await choreo(nowhere, "tail", "order.create", "--from-beginning")
    topics_unreachable = await choreo(nowhere, "topics", "--json")

    assert unknown.exit_code == 1
    assert unknown.stderr.strip() == (
        f"error: no topic {topics}order.created on {kafka_bootstrap} under prefix "
        f"'{topics}'; `choreo topics` lists them"
    )
    for result in (unreachable, topics_unreachable):
        assert result.exit_code == 1
        assert result.stdout == ""
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"error: broker {nowhere['KAFKA_BOOTSTRAP_SERVERS']} unreachable")
