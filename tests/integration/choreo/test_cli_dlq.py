"""`choreo dlq` against a running inventory service that dead-letters what it cannot apply."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from choreo import kafka
from choreo.avro import default_store
from choreo.cli import app
from choreo.cli.output import moment
from choreo.testing import StartService, free_port

runner = CliRunner()


async def choreo(env: dict[str, str], *arguments: str) -> Result:
    """Run the CLI in-process (in a thread: it runs an event loop of its own)."""
    return await asyncio.to_thread(runner.invoke, app, list(arguments), env=env)


async def as_json(env: dict[str, str], *arguments: str) -> Any:
    result = await choreo(env, *arguments, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def entries_when(env: dict[str, str], count: int, timeout: float = 40.0) -> list[Any]:
    entries: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while len(entries) < count:
                await asyncio.sleep(0.5)
                entries = (await as_json(env, "dlq", "list"))["entries"]
    except TimeoutError:
        pytest.fail(f"expected {count} dead letters in {timeout} s; got {entries}")
    return entries


async def end_offsets(env: dict[str, str]) -> dict[str, int]:
    report = await as_json(env, "topics")
    return {topic["topic"]: topic["end_offset"] for topic in report["topics"]}


async def test_dead_letters_are_listed_filtered_shown_and_replayed(
    start_service: StartService, kafka_bootstrap: str, topics: str
) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CHOREO_TOPIC_PREFIX": topics}
    start_service("inventory")
    undecodable_order, headless_order = str(uuid.uuid4()), str(uuid.uuid4())
    cancelled = default_store().encode(
        "OrderCancelled",
        {
            "order_id": headless_order,
            "user_id": str(uuid.uuid4()),
            "reason": "CUSTOMER_REQUEST",
            "previous_status": "PENDING",
            "charged": False,
            "cancelled_at": datetime.now(UTC),
        },
    )
    producer = kafka.producer(kafka_bootstrap)
    await producer.start()
    try:
        # Not Avro at all, though its headers say it is an OrderCreated.
        await producer.send_and_wait(
            f"{topics}order.create",
            b"\x00\x01 definitely not avro",
            key=undecodable_order.encode(),
            headers=[
                ("ce_specversion", b"1.0"),
                ("ce_id", str(uuid.uuid4()).encode()),
                ("ce_type", b"OrderCreated"),
                ("ce_subject", undecodable_order.encode()),
                ("ce_source", b"/order_service"),
            ],
        )
        # A valid OrderCancelled without the CloudEvents headers that make it an event.
        await producer.send_and_wait(
            f"{topics}order.event", cancelled, key=headless_order.encode(), headers=[]
        )
    finally:
        await producer.stop()

    entries = await entries_when(env, 2)
    by_type = {entry["type"]: entry for entry in entries}
    undecodable, headless = by_type["OrderCreated"], by_type["OrderCancelled"]
    assert undecodable["id"] == (
        f"{topics}inventory.dlq:{undecodable['partition']}:{undecodable['offset']}"
    )
    assert undecodable["original_topic"] == f"{topics}order.create"
    assert (undecodable["original_partition"], undecodable["original_offset"]) == (
        undecodable["partition"],
        0,
    )
    assert (undecodable["key"], undecodable["consumer"]) == (undecodable_order, "inventory_service")
    assert undecodable["error_type"] == "UndecodableError"
    assert undecodable["attempts"] == 1
    assert undecodable["failed_at"] is not None
    assert headless["error_type"] == "EnvelopeError"
    assert "ce_id" in headless["error_message"]

    def ids(listed: Any) -> list[str]:
        return [entry["id"] for entry in listed["entries"]]

    assert ids(await as_json(env, "dlq", "list", "--type", "OrderCancelled")) == [headless["id"]]
    assert ids(await as_json(env, "dlq", "list", "--error", "undecodable")) == [undecodable["id"]]
    assert ids(await as_json(env, "dlq", "list", "--error", "lacks CloudEvents")) == [
        headless["id"]
    ]
    assert ids(await as_json(env, "dlq", "list", "--error", "timeout")) == []
    assert len(ids(await as_json(env, "dlq", "list", "--topic", "inventory", "--since", "1h"))) == 2
    assert ids(await as_json(env, "dlq", "list", "--topic", "payment.dlq")) == []
    no_such_topic = await choreo(env, "dlq", "list", "--topic", "shipping")
    assert no_such_topic.exit_code == 1
    assert f"no topic {topics}shipping.dlq" in no_such_topic.stderr

    wide = await choreo(env, "dlq", "list")
    (row,) = [line for line in wide.stdout.splitlines() if undecodable["id"] in line]
    assert row.replace("│", " ").split()[:6] == [
        undecodable["id"],
        moment(datetime.fromisoformat(undecodable["failed_at"])),
        f"{topics}order.create[{undecodable['partition']}]@0",
        "OrderCreated",
        undecodable_order,
        "1",
    ]
    narrow = await choreo({**env, "COLUMNS": "80"}, "dlq", "list")
    block = narrow.stdout.split(undecodable["id"])[1].splitlines()
    original = f"{topics}order.create[{undecodable['partition']}]@0"
    assert block[0].split() == ["OrderCreated", f"key={undecodable_order}"]
    assert block[1].endswith(f"after 1 attempt(s) on {original}")
    assert block[2].strip().startswith("UndecodableError: not an Avro single-object encoded value")

    shown = await as_json(env, "dlq", "show", undecodable["id"])
    assert shown["id"] == undecodable["id"]
    assert shown["headers"]["dlq.original.topic"] == f"{topics}order.create"
    assert shown["headers"]["dlq.error.type"] == "UndecodableError"
    assert shown["headers"]["ce_type"] == "OrderCreated"
    assert shown["value"] is None
    assert shown["raw_hex"].startswith("00 01 20 64")
    decoded = await as_json(env, "dlq", "show", headless["id"])
    assert decoded["value"]["order_id"] == headless_order
    assert decoded["value"]["reason"] == "CUSTOMER_REQUEST"
    people = await choreo(env, "dlq", "show", headless["id"])
    assert people.exit_code == 0
    assert "dlq.error.message=record lacks CloudEvents header(s)" in people.stdout
    assert '"reason": "CUSTOMER_REQUEST"' in people.stdout
    missing = await choreo(env, "dlq", "show", f"{topics}inventory.dlq:0:99")
    assert missing.exit_code == 1
    assert missing.stderr.strip() == (
        f"error: no dead letter {topics}inventory.dlq:0:99; `choreo dlq list` lists them"
    )

    before = await end_offsets(env)
    retry_topic = f"{topics}inventory.retry"
    planned = await as_json(env, "dlq", "replay", "--all", "--dry-run")
    assert planned["dry_run"] is True
    assert {(p["id"], p["to_topic"]) for p in planned["entries"]} == {
        (undecodable["id"], retry_topic),
        (headless["id"], retry_topic),
    }
    expect = {p["id"]: p["expect"] for p in planned["entries"]}
    assert expect[undecodable["id"]].startswith("fail: UndecodableError")
    assert expect[headless["id"]].startswith("fail: EnvelopeError")
    assert await end_offsets(env) == before

    replayed = await as_json(env, "dlq", "replay", undecodable["id"])
    (result,) = replayed["entries"]
    after = await end_offsets(env)
    # To the inventory service's retry topic only: no other consumer of order.create sees it.
    assert after[retry_topic] == before[retry_topic] + 1
    assert after[f"{topics}order.create"] == before[f"{topics}order.create"]
    [copy] = [
        json.loads(line)
        for line in (
            await choreo(env, "tail", "inventory.retry", "--from-beginning", "--json")
        ).stdout.splitlines()
    ]
    [original] = [
        json.loads(line)
        for line in (
            await choreo(env, "tail", "order.create", "--from-beginning", "--json")
        ).stdout.splitlines()
    ]
    assert (copy["partition"], copy["offset"]) == (result["partition"], result["offset"])
    assert copy["headers"]["dlq.replayed.from"] == undecodable["id"]
    assert copy["headers"]["dlq.original.topic"] == f"{topics}order.create"
    assert copy["headers"]["dlq.attempts"] == "1"
    assert "dlq.replayed.at" in copy["headers"]
    assert not any(name.startswith("dlq.error") for name in copy["headers"])
    assert copy["raw_hex"] == original["raw_hex"]
    assert {k: v for k, v in copy["headers"].items() if not k.startswith("dlq.")} == original[
        "headers"
    ]

    # The replay fails again: one new entry, pointing at the first failure, attempts added up.
    entries = await entries_when(env, 3)
    [again] = [e for e in entries if e["id"] not in (undecodable["id"], headless["id"])]
    assert again["consumer"] == "inventory_service"
    assert (again["original_topic"], again["original_offset"]) == (f"{topics}order.create", 0)
    assert again["attempts"] == 2
    shown_again = await as_json(env, "dlq", "show", again["id"])
    assert shown_again["headers"]["dlq.replayed.from"] == undecodable["id"]

    # --all skips what was replayed before; the new entry and the headless one go.
    second = await as_json(env, "dlq", "replay", "--all")
    went = {e["id"]: e["skipped"] for e in second["entries"]}
    assert went == {undecodable["id"]: True, headless["id"]: False, again["id"]: False}
    skipped = next(e for e in second["entries"] if e["id"] == undecodable["id"])
    assert skipped["replayed_as"] == [f"{retry_topic}:{copy['partition']}:{copy['offset']}"]
    await entries_when(env, 5)
    await asyncio.sleep(1.0)  # a sixth would show by now
    assert len((await as_json(env, "dlq", "list"))["entries"]) == 5

    # The order's saga shows the record, its dead letter, the replay and its dead letter.
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}"
    story = await as_json({**env, "DATABASE_URL": nowhere}, "saga", undecodable_order)
    seen = [(record["topic"], record["offset"]) for record in story["timeline"]]
    assert seen[:4] == [
        (f"{topics}order.create", 0),
        (undecodable["topic"], undecodable["offset"]),
        (retry_topic, result["offset"]),
        (again["topic"], again["offset"]),
    ]
    (parked, *_) = story["dead_letters"]
    assert parked["id"] == undecodable["id"]
    assert parked["replayed_as"] == [f"{retry_topic}:{copy['partition']}:{copy['offset']}"]
    assert story["services"]["order"]["error"].startswith("unreachable")
    after = await end_offsets(env)

    unknown = await choreo(env, "dlq", "replay", undecodable["id"], f"{topics}user.dlq:1:5")
    assert unknown.exit_code == 1
    assert f"no dead letter {topics}user.dlq:1:5" in unknown.stderr
    unchanged = await end_offsets(env)
    for topic in ("order.create", "order.event", "inventory.retry"):
        assert unchanged[f"{topics}{topic}"] == after[f"{topics}{topic}"]
