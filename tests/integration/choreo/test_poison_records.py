"""Poison records against the real broker: each is dead-lettered once, bytes intact, and the
saga around it on the same partition still completes, without the consumer ever restarting."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo import kafka
from choreo.avro import default_store
from choreo.consumer import Consumer, RetryPolicy
from choreo.db import UnitOfWork, unit_of_work_factory
from choreo.events import Event
from tests.poison import RawRecord, poison_records, valid_event, wire


@dataclass
class Rig:
    """A running consumer of one topic, and a reader of its dead-letter topic."""

    topic: str
    producer: AIOKafkaProducer
    engine: AsyncEngine
    run: asyncio.Task[None]
    dead_letters: dict[int, list[ConsumerRecord[bytes, bytes]]] = field(default_factory=dict)

    async def publish(self, record: RawRecord) -> int:
        sent = await kafka.send_record(
            self.producer,
            self.topic,
            key=record.key,
            value=record.value,
            headers=record.headers,
            partition=0,
        )
        return int(sent.offset)

    async def applied(self, key: str) -> list[int]:
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT available FROM applied WHERE key = :key ORDER BY n"), {"key": key}
            )
            return [row[0] for row in rows]


async def apply(event: Event, uow: UnitOfWork) -> None:
    await uow.session.execute(
        text("INSERT INTO applied (key, available) VALUES (:key, :available)"),
        {"key": event.subject, "available": event.record.available},
    )


@pytest_asyncio.fixture
async def rig(engine: AsyncEngine, kafka_bootstrap: str, topics: str) -> AsyncIterator[Rig]:
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE applied (n serial, key text, available int)"))
    topic, dlq = f"{topics}stock.updated", f"{topics}test.dlq"
    await kafka.ensure_topics(kafka_bootstrap, [dlq], partitions=3)
    producer = kafka.producer(kafka_bootstrap)
    await producer.start()
    consumer = Consumer(
        name="test_service",
        consumer=kafka.consumer(kafka_bootstrap, group_id=f"{topics}test"),
        producer=producer,
        handlers={topic: {"StockLevelChanged": apply}},
        uow_factory=unit_of_work_factory(engine),
        store=default_store(),
        dlq_topic=dlq,
        retry=RetryPolicy(max_attempts=2, initial_seconds=0.05, max_seconds=0.1),
    )
    rig = Rig(topic, producer, engine, asyncio.create_task(consumer.run()))
    reader = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, fetch_max_wait_ms=kafka.FETCH_MAX_WAIT_MS
    )
    await reader.start()
    reader.assign([TopicPartition(dlq, p) for p in range(3)])
    await reader.seek_to_beginning()

    async def read_dead_letters() -> None:
        while True:
            for records in (await reader.getmany(timeout_ms=100)).values():
                for dead in records:
                    offset = int(dict(dead.headers)["dlq.original.offset"] or b"-1")
                    rig.dead_letters.setdefault(offset, []).append(dead)

    reading = asyncio.create_task(read_dead_letters())
    yield rig
    reading.cancel()
    consumer.stop()
    await asyncio.wait_for(rig.run, 15)
    await reader.stop()
    await producer.stop()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_poison_records_are_dead_lettered_once_and_the_saga_completes(
    rig: Rig, data: st.DataObject
) -> None:
    key = str(uuid.uuid4())
    drawn = data.draw(st.lists(poison_records(key), min_size=1, max_size=3), label="poison")
    first, last = (RawRecord(key.encode(), *wire(valid_event(key, n)), ()) for n in (1, 2))
    await rig.publish(first)
    offsets = [await rig.publish(record) for record in drawn]
    await rig.publish(last)

    async with asyncio.timeout(20):
        while await rig.applied(key) != [1, 2] or not all(o in rig.dead_letters for o in offsets):
            assert not rig.run.done(), "the consumer stopped"
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # a second dead letter of one record would be read by now

    for record, offset in zip(drawn, offsets, strict=True):
        [dead] = rig.dead_letters[offset]
        assert dead.key == record.key, record.defects
        assert dead.value == record.value, record.defects
        assert tuple(dead.headers[: len(record.headers)]) == record.headers, record.defects
        ours = dict(dead.headers[len(record.headers) :])
        assert ours["dlq.original.topic"] == rig.topic.encode()
        assert ours["dlq.consumer"] == b"test_service"
        assert ours["dlq.error.type"] in (
            b"EnvelopeError",
            b"UndecodableError",
            b"UnknownSchemaError",
        ), record.defects
    assert not rig.run.done(), "the consumer stopped"
