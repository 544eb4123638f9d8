"""A database that goes away for a few seconds: the consumer waits it out and dead-letters
nothing (before, a refused connection counted as a permanent failure)."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo import kafka
from choreo.avro import default_store
from choreo.consumer import Consumer, RetryPolicy
from choreo.db import UnitOfWork, create_engine, unit_of_work_factory
from choreo.events import Event
from choreo.migrate import migrate
from choreo.stack.postgres import EmbeddedPostgres
from choreo.testing import free_port
from tests.poison import valid_event, wire


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own, to stop and start."""
    with tempfile.TemporaryDirectory(prefix="choreo-test-pg-outage-") as scratch:
        server = EmbeddedPostgres(Path(scratch) / "data", free_port())
        server.start()
        try:
            yield server
        finally:
            server.stop()


async def record(event: Event, uow: UnitOfWork) -> None:
    await uow.session.execute(
        text("INSERT INTO applied (key, available) VALUES (:key, :available)"),
        {"key": event.subject, "available": event.record.available},
    )


async def applied(engine: AsyncEngine, key: str) -> list[int]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT available FROM applied WHERE key = :key ORDER BY n"), {"key": key}
        )
        return [row[0] for row in rows]


async def test_a_database_restart_is_waited_out_and_dead_letters_nothing(
    own_postgres: EmbeddedPostgres, kafka_bootstrap: str, topics: str
) -> None:
    own_postgres.create_database("service")
    url = own_postgres.url("service").replace("postgresql://", "postgresql+psycopg://", 1)
    await asyncio.to_thread(migrate, "order", url)
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE applied (n serial, key text, available int)"))
    topic, dlq = f"{topics}stock.updated", f"{topics}test.dlq"
    await kafka.ensure_topics(kafka_bootstrap, [dlq], partitions=1)
    producer = kafka.producer(kafka_bootstrap)
    await producer.start()
    consumer = Consumer(
        name="test_service",
        consumer=kafka.consumer(kafka_bootstrap, group_id=f"{topics}test"),
        producer=producer,
        handlers={topic: {"StockLevelChanged": record}},
        uow_factory=unit_of_work_factory(engine),
        store=default_store(),
        dlq_topic=dlq,
        # Two attempts would be spent in well under a second of outage.
        retry=RetryPolicy(max_attempts=2, initial_seconds=0.05, max_seconds=0.5),
    )
    running = asyncio.create_task(consumer.run())
    key = str(uuid.uuid4())

    async def send(n: int) -> None:
        value, headers = wire(valid_event(key, n))
        await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)

    try:
        await send(0)
        async with asyncio.timeout(30):
            while await applied(engine, key) != [0]:
                await asyncio.sleep(0.1)

        await asyncio.to_thread(own_postgres.stop)
        for n in range(1, 4):
            await send(n)
        await asyncio.sleep(4.0)  # the consumer meets the outage on record 1
        assert consumer.outages(), "no record is waiting out the outage"
        await asyncio.to_thread(own_postgres.start)

        async with asyncio.timeout(30):
            while await applied(engine, key) != [0, 1, 2, 3]:
                await asyncio.sleep(0.2)
        assert consumer.outages() == []
        assert not running.done(), "the consumer stopped"
    finally:
        consumer.stop()
        await asyncio.wait_for(running, 20)
        await producer.stop()
        await engine.dispose()

    reader = AIOKafkaConsumer(dlq, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await reader.start()
    try:
        dead = await reader.getmany(timeout_ms=2000)
    finally:
        await reader.stop()
    assert sum(len(records) for records in dead.values()) == 0, "a record was dead-lettered"
