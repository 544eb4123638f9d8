"""Kit integration fixtures: a migrated service database and Kafka helpers."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest_asyncio
from aiokafka import AIOKafkaConsumer
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.db import create_engine
from choreo.events import Event
from choreo.migrate import migrate
from choreo.records import StockLevelChanged
from choreo.testing import records as make


@pytest_asyncio.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A database migrated like the order service's (kit tables only so far)."""
    await asyncio.to_thread(migrate, "order", database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def stock_event(key: str, seq: int) -> Event[StockLevelChanged]:
    """A test event for stream `key` carrying its position `seq` in `available`."""
    changed = make.stock_level_changed(product_id=key, available=seq)
    # StockLevelChanged's owner, as its relay names it.
    return dataclasses.replace(changed, source="/inventory_service")


def new_key() -> str:
    return str(uuid.uuid4())


@dataclass
class Received:
    """What a reader saw of a topic: every record, in the order each partition gave them."""

    by_key: dict[str, list[int]] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)
    records: int = 0

    def first_seen_order(self, key: str) -> list[int]:
        return list(dict.fromkeys(self.by_key.get(key, [])))


async def read_until(
    bootstrap: str, topic: str, wanted_ids: int, *, timeout: float = 120.0
) -> Received:
    """Read `topic` from the beginning until `wanted_ids` distinct ce_ids were seen."""
    from choreo.avro import default_store

    store = default_store()
    received = Received()
    reader = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await reader.start()
    try:
        async with asyncio.timeout(timeout):
            while len(received.ids) < wanted_ids:
                batch = await reader.getmany(timeout_ms=500, max_records=5000)
                for records in batch.values():
                    for record in records:
                        headers = dict(record.headers)
                        _, data = store.decode(record.value)
                        key = record.key.decode()
                        received.by_key.setdefault(key, []).append(data["available"])
                        received.ids.add(headers["ce_id"].decode())
                        received.records += 1
    finally:
        await reader.stop()
    return received
