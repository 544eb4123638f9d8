"""A broker that comes back empty: the consumer notices its position is beyond the log's end
and re-reads the new log from its start, instead of silently skipping what lands below it."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo import kafka
from choreo.avro import default_store
from choreo.consumer import Consumer, RetryPolicy
from choreo.db import UnitOfWork, unit_of_work_factory
from choreo.events import Event
from choreo.stack.broker import TansuBroker
from choreo.testing import free_port
from tests.poison import valid_event, wire

TOPIC, DLQ = "stock.updated", "test.dlq"
BEFORE, AFTER = str(uuid.uuid4()), str(uuid.uuid4())


async def record(event: Event, uow: UnitOfWork) -> None:
    await asyncio.sleep(0.05)  # slow enough that the broker dies with records still in hand
    await uow.session.execute(
        text("INSERT INTO applied (key, available) VALUES (:key, :available)"),
        {"key": event.subject, "available": event.record.available},
    )


async def publish(bootstrap: str, key: str, values: range) -> None:
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        for n in values:
            value, headers = wire(valid_event(key, n))
            await producer.send_and_wait(TOPIC, value, key=key.encode(), headers=headers)
    finally:
        await producer.stop()


async def applied(engine: AsyncEngine, key: str) -> list[int]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT available FROM applied WHERE key = :key ORDER BY n"), {"key": key}
        )
        return [row[0] for row in rows]


async def until_applied(engine: AsyncEngine, key: str, expected: list[int]) -> None:
    try:
        async with asyncio.timeout(40):
            while await applied(engine, key) != expected:
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{key}: applied {await applied(engine, key)}") from None


async def test_a_broker_restarted_empty_is_reread_from_its_start(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE applied (n serial, key text, available int)"))
    port = free_port()
    broker = TansuBroker(port)
    broker.start()
    bootstrap = broker.bootstrap_servers
    await kafka.ensure_topics(bootstrap, [TOPIC, DLQ], partitions=1)
    producer = kafka.producer(bootstrap)
    await producer.start()
    consumer = Consumer(
        name="test_service",
        consumer=kafka.consumer(bootstrap, group_id="test"),
        producer=producer,
        handlers={TOPIC: {"StockLevelChanged": record}},
        uow_factory=unit_of_work_factory(engine),
        store=default_store(),
        dlq_topic=DLQ,
        retry=RetryPolicy(max_attempts=2, initial_seconds=0.05, max_seconds=0.1),
    )
    running = asyncio.create_task(consumer.run())
    try:
        await publish(bootstrap, BEFORE, range(60))
        async with asyncio.timeout(30):
            while len(await applied(engine, BEFORE)) < 10:
                await asyncio.sleep(0.05)

        broker.stop()  # memory storage: every record and committed offset is gone
        broker = TansuBroker(port)
        broker.start()
        await kafka.ensure_topics(bootstrap, [TOPIC, DLQ], partitions=1)
        # The consumer goes on with the records it holds and commits their offsets (up to 60)
        # on the new log; what is published now lands at offsets 0-4, below them. (What it
        # held when the group was lost is gone with the old log: memory storage.)
        await publish(bootstrap, AFTER, range(5))

        await until_applied(engine, AFTER, list(range(5)))
        assert not running.done(), "the consumer stopped"
    finally:
        consumer.stop()
        await asyncio.wait_for(running, 20)
        await producer.stop()
        broker.stop()
