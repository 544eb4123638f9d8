"""Outbox and relay against real PostgreSQL and the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo import kafka
from choreo.avro import default_store
from choreo.db import UnitOfWorkFactory, sync_dsn, unit_of_work_factory
from choreo.outbox import EndOffsets, OutboxWriter, Relay
from choreo.stack.broker import TansuBroker
from choreo.tables import outbox_table
from choreo.testing import eventually, free_port

from .conftest import new_key, read_until, stock_event

RELAY_PROCESS = Path(__file__).with_name("relay_process.py")


@pytest.fixture
def topic(topics: str) -> str:
    return f"{topics}stock.updated"


@pytest.fixture
def uow_factory(engine: AsyncEngine, topics: str) -> UnitOfWorkFactory:
    writer = OutboxWriter(default_store(), "/test_service", lambda name: f"{topics}{name}")
    return unit_of_work_factory(engine, writer)


@pytest_asyncio.fixture
async def start_relay(
    database_url: str, kafka_bootstrap: str
) -> AsyncIterator[Callable[[], Relay]]:
    """Start in-process relays on the test database; all are stopped afterwards."""
    producer = kafka.producer(kafka_bootstrap)
    await producer.start()
    running: list[tuple[Relay, asyncio.Task[None]]] = []

    def start() -> Relay:
        relay = Relay(sync_dsn(database_url), producer, poll_interval=0.5, lock_retry_interval=0.2)
        running.append((relay, asyncio.create_task(relay.run())))
        return relay

    yield start
    for relay, task in running:
        relay.stop()
        await task
    await producer.stop()


async def write_streams(
    uow_factory: UnitOfWorkFactory,
    keys: list[str],
    per_key: int,
    *,
    writers: int,
    per_txn: int,
    first: int = 0,
) -> None:
    """Concurrent writers, each owning some keys, commit sequence numbers first.. in order."""
    end = first + per_key

    async def writer(owned: list[str]) -> None:
        for start in range(first, end, per_txn):
            async with uow_factory() as uow:
                for seq in range(start, min(start + per_txn, end)):
                    for key in owned:
                        uow.publish(stock_event(key, seq).record)

    await asyncio.gather(*(writer(keys[i::writers]) for i in range(writers)))


async def unpublished(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        query = select(func.count()).where(outbox_table.c.published_at.is_(None))
        return int((await connection.execute(query)).scalar_one())


def assert_each_key_in_order(
    received_by_key: dict[str, list[int]], keys: list[str], n: int
) -> None:
    for key in keys:
        seen = list(dict.fromkeys(received_by_key[key]))
        assert seen == list(range(n)), f"key {key} arrived out of order or incomplete"


async def test_twenty_thousand_events_across_200_keys_arrive_in_key_order(
    uow_factory: UnitOfWorkFactory,
    start_relay: Callable[[], Relay],
    engine: AsyncEngine,
    kafka_bootstrap: str,
    topic: str,
) -> None:
    keys = [new_key() for _ in range(200)]
    start_relay()
    await write_streams(uow_factory, keys, 100, writers=20, per_txn=5)

    received = await read_until(kafka_bootstrap, topic, 20_000)

    assert len(received.ids) == 20_000
    assert_each_key_in_order(received.by_key, keys, 100)
    assert await unpublished(engine) == 0


async def test_a_rolled_back_transaction_publishes_nothing(
    uow_factory: UnitOfWorkFactory,
    start_relay: Callable[[], Relay],
    kafka_bootstrap: str,
    topic: str,
) -> None:
    start_relay()
    doomed = new_key()

    async def failing_step() -> None:
        async with uow_factory() as uow:
            uow.publish(stock_event(doomed, 0).record)
            raise RuntimeError("the handler failed after publishing")

    with pytest.raises(RuntimeError):
        await failing_step()
    survivor = new_key()
    async with uow_factory() as uow:
        uow.publish(stock_event(survivor, 0).record)

    received = await read_until(kafka_bootstrap, topic, 1)
    await asyncio.sleep(1.0)  # give a wrongly published record time to show up too
    received = await read_until(kafka_bootstrap, topic, 1)

    assert set(received.by_key) == {survivor}


async def test_two_relays_on_one_database_keep_key_order_and_fail_over(
    uow_factory: UnitOfWorkFactory,
    start_relay: Callable[[], Relay],
    engine: AsyncEngine,
    kafka_bootstrap: str,
    topic: str,
) -> None:
    keys = [new_key() for _ in range(50)]
    first, second = start_relay(), start_relay()
    await write_streams(uow_factory, keys, 40, writers=10, per_txn=4)
    await read_until(kafka_bootstrap, topic, 2_000)
    assert sorted([first.published, second.published])[0] == 0, "both relays published at once"

    active = first if first.published else second
    active.stop()
    await asyncio.sleep(0.5)
    await write_streams(uow_factory, keys, 40, writers=10, per_txn=4, first=40)

    received = await read_until(kafka_bootstrap, topic, 4_000)
    standby = second if active is first else first
    assert standby.published > 0, "the standby relay never took over"
    assert_each_key_in_order(received.by_key, keys, 80)
    assert await unpublished(engine) == 0


async def test_a_relay_killed_mid_run_loses_nothing_after_restart(
    uow_factory: UnitOfWorkFactory,
    database_url: str,
    engine: AsyncEngine,
    kafka_bootstrap: str,
    topic: str,
) -> None:
    keys = [new_key() for _ in range(100)]
    await write_streams(uow_factory, keys, 50, writers=10, per_txn=5)

    def spawn() -> subprocess.Popen[bytes]:
        command = [sys.executable, str(RELAY_PROCESS), sync_dsn(database_url), kafka_bootstrap]
        return subprocess.Popen(command, env={**os.environ, "RELAY_BATCH_SIZE": "100"})

    relay = spawn()
    try:
        async with asyncio.timeout(60):
            while await unpublished(engine) > 3_000:
                await asyncio.sleep(0.01)
        relay.send_signal(signal.SIGKILL)
        relay.wait()
        left = await unpublished(engine)
        assert 0 < left < 5_000, "the relay was not killed mid-run"

        relay = spawn()
        received = await read_until(kafka_bootstrap, topic, 5_000)
    finally:
        relay.kill()
        relay.wait()

    assert_each_key_in_order(received.by_key, keys, 50)
    assert await unpublished(engine) == 0


@dataclass
class LostLog:
    """A broker of the test's own (memory storage) whose only partition of `topic` held 20
    events of `key`, all published by a relay that then stopped, and that came back empty."""

    broker: TansuBroker
    producer: AIOKafkaProducer
    factory: UnitOfWorkFactory
    key: str
    topic: str = "stock.updated"


@pytest_asyncio.fixture
async def lost_log(database_url: str, engine: AsyncEngine) -> AsyncIterator[LostLog]:
    port = free_port()
    broker = TansuBroker(port)
    broker.start()
    writer = OutboxWriter(default_store(), "/test_service", lambda name: name)
    rig = LostLog(
        broker,
        kafka.producer(broker.bootstrap_servers),
        unit_of_work_factory(engine, writer),
        new_key(),
    )
    await kafka.ensure_topics(broker.bootstrap_servers, [rig.topic], partitions=1)
    await rig.producer.start()
    try:
        relay = Relay(sync_dsn(database_url), rig.producer, poll_interval=0.2)
        running = asyncio.create_task(relay.run())
        await write_streams(rig.factory, [rig.key], 20, writers=1, per_txn=5)
        async with asyncio.timeout(30):
            while await unpublished(engine):
                await asyncio.sleep(0.1)
        relay.stop()  # the service restarts too: the new relay remembers nothing in memory
        await running
        broker.stop()  # every record is gone with it
        rig.broker = TansuBroker(port)
        rig.broker.start()
        await kafka.ensure_topics(rig.broker.bootstrap_servers, [rig.topic], partitions=1)
        yield rig
    finally:
        await rig.producer.stop()
        rig.broker.stop()


@contextlib.asynccontextmanager
async def relaying(
    database_url: str, producer: AIOKafkaProducer, end_offsets: EndOffsets | None = None
) -> AsyncIterator[None]:
    relay = Relay(
        sync_dsn(database_url),
        producer,
        poll_interval=0.2,
        lock_retry_interval=0.2,
        end_offsets=end_offsets,
    )
    running = asyncio.create_task(relay.run())
    try:
        yield
    finally:
        relay.stop()
        await running


async def test_a_broker_that_lost_its_log_is_refilled_from_the_outbox(
    database_url: str, lost_log: LostLog
) -> None:
    async with relaying(database_url, lost_log.producer):
        await write_streams(lost_log.factory, [lost_log.key], 5, writers=1, per_txn=5, first=20)
        # The first acknowledgement on the new log is below the end the last relay recorded:
        # the relay publishes the last window again, so the new log holds all 25 events.
        bootstrap = lost_log.broker.bootstrap_servers
        received = await read_until(bootstrap, lost_log.topic, 25, timeout=60)
    assert sorted(set(received.by_key[lost_log.key])) == list(range(25))


async def test_a_relay_starting_after_the_broker_lost_its_log_refills_it_at_once(
    database_url: str, lost_log: LostLog
) -> None:
    bootstrap = lost_log.broker.bootstrap_servers
    end_offsets = functools.partial(kafka.end_offsets, bootstrap)
    async with relaying(database_url, lost_log.producer, end_offsets):
        # Nothing new is written: the relay sees the log's end below the one it recorded
        # as soon as it becomes active, and publishes the last window again.
        received = await read_until(bootstrap, lost_log.topic, 20, timeout=60)
    assert sorted(set(received.by_key[lost_log.key])) == list(range(20))


async def test_the_active_relay_reports_its_backlog_and_a_stopped_one_none(
    uow_factory: UnitOfWorkFactory, database_url: str, engine: AsyncEngine, kafka_bootstrap: str
) -> None:
    await write_streams(uow_factory, [new_key()], 25, writers=1, per_txn=25)
    producer = kafka.producer(kafka_bootstrap)
    await producer.start()
    started: list[tuple[Relay, asyncio.Task[None]]] = []
    name_of: dict[Relay, str] = {}

    def backlog(relay: Relay) -> float | None:
        labels = {"relay": name_of[relay]}
        return REGISTRY.get_sample_value("choreo_outbox_unpublished_rows", labels)

    def start(backlog_interval_seconds: float) -> Relay:
        name = f"backlog-{uuid.uuid4().hex[:8]}"
        relay = Relay(
            sync_dsn(database_url),
            producer,
            batch_size=10,
            poll_interval=0.2,
            backlog_interval_seconds=backlog_interval_seconds,
            name=name,
        )
        name_of[relay] = name
        started.append((relay, asyncio.create_task(relay.run())))
        return relay

    async def stop(relay: Relay) -> None:
        relay.stop()
        await next(task for r, task in started if r is relay)

    try:
        # Counted once, right after the first batch of 10 (the next count is an hour away).
        first = start(3600.0)
        await eventually(lambda: backlog(first) == 15, "15 of 25 rows counted as waiting")
        async with asyncio.timeout(30):
            while await unpublished(engine):
                await asyncio.sleep(0.1)
        await stop(first)
        assert backlog(first) is None, "a relay that stopped still reports a backlog"

        second = start(0.1)
        await eventually(lambda: backlog(second) == 0, "the next active relay counts none")
    finally:
        for relay, _ in started:
            await stop(relay)
        await producer.stop()


async def test_a_notification_naming_rows_read_already_wakes_no_read(
    uow_factory: UnitOfWorkFactory, database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    """A commit that raced the relay's last read notifies rows that read returned: the relay
    drops that notification instead of reading again for nothing; a notification naming a
    row it has not read wakes it as before."""
    producer = kafka.producer(kafka_bootstrap)
    await producer.start()
    relay = Relay(sync_dsn(database_url), producer, poll_interval=3600.0)  # no fallback read
    running = asyncio.create_task(relay.run())
    key = new_key()
    try:
        async with uow_factory() as uow:
            uow.publish(stock_event(key, 0).record)
        await eventually(lambda: relay.published == 1, "the first row published")
        reads = relay.reads
        async with await psycopg.AsyncConnection.connect(
            sync_dsn(database_url), autocommit=True
        ) as conn:
            cursor = await conn.execute("SELECT max(id) FROM outbox")
            row = await cursor.fetchone()
            assert row is not None
            await conn.execute("SELECT pg_notify('choreo_outbox', %s)", (str(row[0]),))
        async with uow_factory() as uow:  # its notification comes after the stale one
            uow.publish(stock_event(key, 1).record)
        await eventually(lambda: relay.published == 2, "the second row published")
        assert relay.reads == reads + 1, "the stale notification woke the relay for a read"
        received = await read_until(kafka_bootstrap, topic, 2)
        assert received.by_key[key] == [0, 1]
    finally:
        relay.stop()
        await running
        await producer.stop()
