"""The idempotent consumer against real PostgreSQL and the real broker."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo import kafka
from choreo.avro import default_store
from choreo.consumer import Consumer, Handler, RetryPolicy, group
from choreo.db import UnitOfWork, unit_of_work_factory
from choreo.errors import PermanentError, TransientError
from choreo.events import Event, headers_of
from choreo.testing import eventually

from .conftest import new_key, stock_event

Apply = Callable[..., Awaitable[Consumer]]


@pytest_asyncio.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = kafka.producer(kafka_bootstrap)
    await producer.start()
    yield producer
    await producer.stop()


@pytest_asyncio.fixture
async def applied_table(engine: AsyncEngine) -> AsyncEngine:
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE applied (event_id text, available int)"))
    return engine


async def applied_rows(engine: AsyncEngine) -> list[tuple[str, int]]:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT event_id, available FROM applied"))
        return [(r[0], r[1]) for r in rows]


async def record_applied(event: Event, uow: UnitOfWork) -> None:
    await uow.session.execute(
        text("INSERT INTO applied VALUES (:id, :available)"),
        {"id": event.id, "available": event.record.available},
    )


async def send(
    producer: AIOKafkaProducer, topic: str, event: Event, partition: int | None = None
) -> None:
    value = default_store().encode(event.type, event.record.to_avro())
    headers = [(k, v.encode()) for k, v in headers_of(event).items()]
    await producer.send_and_wait(
        topic, value, key=event.subject.encode(), headers=headers, partition=partition
    )


def dead_letters_counted(topic: str, error: str) -> float | None:
    labels = {"consumer": "test_service", "topic": topic, "error": error}
    return REGISTRY.get_sample_value("choreo_consumer_dead_letters_total", labels)


QUICK_RETRY = RetryPolicy(max_attempts=4, initial_seconds=0.05, max_seconds=0.2)


@pytest_asyncio.fixture
async def run_consumer(
    applied_table: AsyncEngine, kafka_bootstrap: str, producer: AIOKafkaProducer, topics: str
) -> AsyncIterator[Callable[[Handler], Consumer]]:
    """Start a consumer of `stock.updated` with the given StockLevelChanged handler."""
    started: list[tuple[Consumer, asyncio.Task[None]]] = []

    def start(handler: Handler, retry: RetryPolicy = QUICK_RETRY) -> Consumer:
        topic = f"{topics}stock.updated"
        consumer = Consumer(
            name="test_service",
            consumer=kafka.consumer(kafka_bootstrap, group_id=f"{topics}test"),
            producer=producer,
            handlers={topic: {"StockLevelChanged": handler}},
            uow_factory=unit_of_work_factory(applied_table),
            store=default_store(),
            dlq_topic=f"{topics}test.dlq",
            retry=retry,
        )
        started.append((consumer, asyncio.create_task(consumer.run())))
        return consumer

    yield start
    for consumer, task in started:
        consumer.stop()
        await asyncio.wait_for(task, 10)


async def wait_for_rows(engine: AsyncEngine, count: int, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while len(await applied_rows(engine)) < count:
            await asyncio.sleep(0.1)


async def read_dlq(bootstrap: str, topic: str, count: int) -> list[object]:
    reader = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await reader.start()
    found: list[object] = []
    try:
        async with asyncio.timeout(30):
            while len(found) < count:
                for records in (await reader.getmany(timeout_ms=500)).values():
                    found.extend(records)
    finally:
        await reader.stop()
    return found


async def test_a_record_delivered_twice_is_applied_once(
    run_consumer: Callable[[Handler], Consumer],
    producer: AIOKafkaProducer,
    applied_table: AsyncEngine,
    topics: str,
) -> None:
    key = new_key()
    duplicate = stock_event(key, 1)
    for event in (duplicate, duplicate, stock_event(key, 2)):
        await send(producer, f"{topics}stock.updated", event)

    run_consumer(record_applied)
    await wait_for_rows(applied_table, 2)
    await asyncio.sleep(1.0)  # a second application of the duplicate would land by now

    assert sorted(a for _, a in await applied_rows(applied_table)) == [1, 2]


async def test_a_log_read_again_skips_what_was_applied_in_bulk_and_applies_the_rest(
    producer: AIOKafkaProducer,
    applied_table: AsyncEngine,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    topic = f"{topics}stock.updated"
    key = new_key()  # one key: one partition, whose worker gets the records in bulk
    for seq in range(60):
        await send(producer, topic, stock_event(key, seq))
    opened = 0

    def counted_units_of_work() -> UnitOfWork:
        nonlocal opened
        opened += 1
        return unit_of_work_factory(applied_table)()

    async def read_from_the_start(group_id: str) -> None:
        consumer = Consumer(
            name="test_service",
            consumer=kafka.consumer(kafka_bootstrap, group_id=group_id),
            producer=producer,
            handlers={topic: {"StockLevelChanged": record_applied}},
            uow_factory=counted_units_of_work,
            store=default_store(),
            dlq_topic=f"{topics}test.dlq",
            retry=QUICK_RETRY,
        )
        running = asyncio.create_task(consumer.run())
        await wait_for_rows(applied_table, 63 if group_id.endswith("again") else 60)
        await asyncio.sleep(1.0)  # a second application would land by now
        consumer.stop()
        await asyncio.wait_for(running, 10)

    await read_from_the_start(f"{topics}first")
    first_time = opened
    assert first_time >= 60  # a transaction per record applied
    # A group with no committed offsets (as after a memory broker's restart) reads the whole
    # log again: the 60 applied records cost a query or a few, the 3 new ones are applied.
    for seq in range(60, 63):
        await send(producer, topic, stock_event(key, seq))
    opened = 0
    await read_from_the_start(f"{topics}again")
    assert sorted(a for _, a in await applied_rows(applied_table)) == list(range(63))
    assert opened < 20, f"{opened} units of work to read 60 applied and 3 new records"


async def test_a_retriable_failure_is_retried_then_succeeds(
    run_consumer: Callable[[Handler], Consumer],
    producer: AIOKafkaProducer,
    applied_table: AsyncEngine,
    topics: str,
) -> None:
    attempts: list[int] = []

    async def flaky(event: Event, uow: UnitOfWork) -> None:
        await record_applied(event, uow)  # rolled back with the failed attempts
        attempts.append(1)
        if len(attempts) < 3:
            raise TransientError("the upstream is briefly down")

    await send(producer, f"{topics}stock.updated", stock_event(new_key(), 7))
    run_consumer(flaky)
    await wait_for_rows(applied_table, 1)

    assert len(attempts) == 3
    assert [available for _, available in await applied_rows(applied_table)] == [7]


async def test_an_undecodable_record_is_dead_lettered_and_the_next_one_applied(
    run_consumer: Callable[[Handler], Consumer],
    producer: AIOKafkaProducer,
    applied_table: AsyncEngine,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    key = new_key()
    garbage = b"\xc3\x01not-an-avro-body"
    bad = stock_event(key, 1)
    bad_headers = [(k, v.encode()) for k, v in headers_of(bad).items()]
    topic = f"{topics}stock.updated"
    await producer.send_and_wait(topic, garbage, key=key.encode(), headers=bad_headers)
    await send(producer, topic, stock_event(key, 2))

    run_consumer(record_applied)
    await wait_for_rows(applied_table, 1)
    [dead] = await read_dlq(kafka_bootstrap, f"{topics}test.dlq", 1)

    assert [a for _, a in await applied_rows(applied_table)] == [2]
    assert dead.value == garbage  # type: ignore[attr-defined]
    assert dead.key == key.encode()  # type: ignore[attr-defined]
    headers = dict(dead.headers)  # type: ignore[attr-defined]
    assert headers["ce_id"] == bad.id.encode()
    assert headers["dlq.original.topic"] == topic.encode()
    assert headers["dlq.consumer"] == b"test_service"
    assert headers["dlq.error.type"] == b"UnknownSchemaError"
    assert headers["dlq.original.offset"].isdigit()
    assert headers["dlq.original.partition"].isdigit()
    for name in ("dlq.error.message", "dlq.attempts", "dlq.failed_at"):
        assert headers[name], name
    await eventually(
        lambda: dead_letters_counted(topic, "UnknownSchemaError") == 1, "the dead letter counted"
    )


async def test_a_permanent_failure_is_dead_lettered_at_once(
    run_consumer: Callable[[Handler], Consumer],
    producer: AIOKafkaProducer,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    calls: list[int] = []

    async def invalid(event: Event, uow: UnitOfWork) -> None:
        calls.append(1)
        raise PermanentError(f"order {event.subject} does not exist")

    await send(producer, f"{topics}stock.updated", stock_event(new_key(), 3))
    run_consumer(invalid)
    [dead] = await read_dlq(kafka_bootstrap, f"{topics}test.dlq", 1)

    headers = dict(dead.headers)  # type: ignore[attr-defined]
    assert calls == [1]
    assert headers["dlq.attempts"] == b"1"
    assert headers["dlq.error.type"] == b"PermanentError"
    topic = f"{topics}stock.updated"
    await eventually(
        lambda: dead_letters_counted(topic, "PermanentError") == 1, "the dead letter counted"
    )


async def test_offsets_are_committed_after_the_records_are_applied(
    run_consumer: Callable[[Handler], Consumer],
    producer: AIOKafkaProducer,
    applied_table: AsyncEngine,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    key = new_key()
    topic = f"{topics}stock.updated"
    for seq in range(5):
        await send(producer, topic, stock_event(key, seq))
    consumer = run_consumer(record_applied)
    await wait_for_rows(applied_table, 5)
    consumer.stop()
    await asyncio.sleep(1.5)

    probe = kafka.consumer(kafka_bootstrap, group_id=f"{topics}test", topics=[])
    await probe.start()
    try:
        partitions = probe.partitions_for_topic(topic) or set()
        committed = [await probe.committed(TopicPartition(topic, p)) or 0 for p in partitions]
    finally:
        await probe.stop()
    assert sum(committed) == 5


async def test_a_record_waiting_out_its_retries_holds_back_only_its_own_partition(
    run_consumer: Callable[..., Consumer],
    applied_table: AsyncEngine,
    producer: AIOKafkaProducer,
    topics: str,
) -> None:
    topic = f"{topics}stock.updated"
    slow, fast = stock_event(new_key(), 1), stock_event(new_key(), 2)
    applied_at: dict[int, float] = {}
    slow_attempts: list[float] = []
    loop = asyncio.get_running_loop()
    outage_seconds = 6.0

    async def slow_for_one(event: Event, uow: UnitOfWork) -> None:
        if event.id == slow.id:
            slow_attempts.append(loop.time())
            if loop.time() < slow_attempts[0] + outage_seconds:
                raise TransientError("the upstream is down for a few seconds")
        await record_applied(event, uow)
        applied_at[event.record.available] = loop.time()

    await send(producer, topic, slow, partition=0)
    run_consumer(slow_for_one, RetryPolicy(max_attempts=100, initial_seconds=0.1, max_seconds=0.3))
    async with asyncio.timeout(30):
        while not slow_attempts:
            await asyncio.sleep(0.05)
    # The slow record is now retrying; a record on another partition arrives in a later poll.
    await send(producer, topic, fast, partition=1)
    await wait_for_rows(applied_table, 2)

    assert applied_at[2] < slow_attempts[0] + outage_seconds, "it waited for the outage"
    assert applied_at[2] < applied_at[1]


async def test_a_partition_whose_worker_falls_behind_is_paused_then_resumed_in_order(
    run_consumer: Callable[..., Consumer],
    applied_table: AsyncEngine,
    producer: AIOKafkaProducer,
    topics: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(group, "MAX_PENDING", 4)
    topic = f"{topics}stock.updated"
    key = new_key()
    events = [stock_event(key, seq) for seq in range(12)]
    release = asyncio.Event()

    async def stuck_on_the_first(event: Event, uow: UnitOfWork) -> None:
        if event.id == events[0].id:
            await release.wait()
        await record_applied(event, uow)

    await send(producer, topic, events[0], partition=0)
    consumer = run_consumer(stuck_on_the_first)
    for event in events[1:]:
        await send(producer, topic, event, partition=0)
    # While the first record is stuck, the rest pile up in its worker until the partition is
    # paused (the consumer's own client says so: nothing else shows a pause).
    partition = TopicPartition(topic, 0)
    async with asyncio.timeout(30):
        while partition not in consumer._consumer.paused():
            await asyncio.sleep(0.05)

    release.set()
    await wait_for_rows(applied_table, len(events))
    assert [available for _, available in await applied_rows(applied_table)] == list(range(12))
    async with asyncio.timeout(10):
        while partition in consumer._consumer.paused():  # resumed once it caught up
            await asyncio.sleep(0.05)


async def test_a_partitions_lag_counts_the_records_not_applied_yet(
    run_consumer: Callable[..., Consumer],
    applied_table: AsyncEngine,
    producer: AIOKafkaProducer,
    topics: str,
) -> None:
    topic = f"{topics}stock.updated"
    key = new_key()
    events = [stock_event(key, seq) for seq in range(3)]
    release = asyncio.Event()
    labels = {"consumer": "test_service", "topic": topic, "partition": "0"}

    def lag() -> float | None:
        return REGISTRY.get_sample_value("choreo_consumer_lag_records", labels)

    async def stuck_on_the_first(event: Event, uow: UnitOfWork) -> None:
        if event.id == events[0].id:
            await release.wait()
        await record_applied(event, uow)

    for event in events:
        await send(producer, topic, event, partition=0)
    consumer = run_consumer(stuck_on_the_first)

    await eventually(lambda: lag() == 2, "the two records behind the stuck one as lag")
    release.set()
    await wait_for_rows(applied_table, len(events))
    await eventually(lambda: lag() == 0, "no lag once all three are applied")
    consumer.stop()
    await eventually(lambda: lag() is None, "no lag reported for partitions given up")


ZOMBIE_MEMBER = """
import asyncio, sys
from choreo import kafka

async def main() -> None:
    consumer = kafka.consumer(sys.argv[1], topics=[sys.argv[2]], group_id=sys.argv[3])
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=200)
    print("assigned", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_member_waiting_for_a_killed_ones_partitions_says_so(
    run_consumer: Callable[[Handler], Consumer],
    applied_table: AsyncEngine,
    kafka_bootstrap: str,
    producer: AIOKafkaProducer,
    topics: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A member killed without leaving the group holds its partitions until its session times
    out; the member that replaces it (a restarted service) says why it consumes nothing."""
    topic = f"{topics}stock.updated"
    zombie = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        ZOMBIE_MEMBER,
        kafka_bootstrap,
        topic,
        f"{topics}test",
        stdout=asyncio.subprocess.PIPE,
    )
    assert zombie.stdout is not None
    async with asyncio.timeout(60):
        assert await zombie.stdout.readline() == b"assigned\n"
    zombie.kill()
    await zombie.wait()

    with caplog.at_level(logging.INFO, logger="choreo.consumer.group"):
        run_consumer(record_applied)
        event = stock_event(new_key(), 1)
        await send(producer, topic, event)
        await wait_for_rows(applied_table, 1, timeout=60)
    said = [r.getMessage() for r in caplog.records if r.name == "choreo.consumer.group"]
    waiting = next(i for i, m in enumerate(said) if "waiting for the group to assign" in m)
    assigned = next(i for i, m in enumerate(said) if ": assigned " in m)
    assert waiting < assigned
    assert "session times out (10 s)" in said[waiting]
