"""The ceiling: what the saga's primitives cost alone on this machine, measured in the same run.

- a saga step's transaction (an inbox insert, a business-row update and an outbox insert with
  its NOTIFY trigger, as the kit writes them) on a scratch database of the stack's PostgreSQL;
- records produced (`acks=all`, pipelined as the relay sends them) and consumed on a scratch
  topic of the stack's broker;
- bare FastAPI requests through the bench's own HTTP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import psycopg
import sqlalchemy
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from psycopg.types.json import Jsonb

from choreo import kafka
from choreo.avro import default_store
from choreo.db import sync_dsn
from choreo.events import Event
from choreo.outbox import OutboxWriter
from choreo.records import OrderConfirmed
from choreo.stack.errors import PartExitedError, ReadinessTimeoutError
from choreo.stack.postgres import create_database, database_url, drop_database
from choreo.stack.probes import http_ok
from choreo.stack.process import ChildProcess, OutputSink, ProcessSpec, port_is_free
from choreo.tables import NOTIFY_TRIGGER_DDL, inbox_table, outbox_table

_PARTITIONS = 6
_KEYS = 200
_SEND_CHUNK = 1000
_DRAIN_TIMEOUT = 60.0
_SERVER_START_TIMEOUT = 60.0
_PORT_RANGE = range(30_000, 32_000)


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, float]:
        return {"count": self.count, "seconds": round(self.seconds, 3), "per_s": self.per_second}


def sample_row() -> dict[str, Any]:
    """An outbox row as the order service writes it for OrderConfirmed (real Avro, real
    CloudEvents headers)."""
    record = OrderConfirmed(
        order_id=str(uuid.uuid4()),
        user_id=str(uuid.uuid4()),
        total_amount=3900,
        currency="USD",
        confirmed_at=datetime.now(UTC),
    )
    event = Event(record)
    return OutboxWriter(default_store(), "/order_service").row(event)


@contextlib.contextmanager
def scratch_database(server: str, purpose: str) -> Iterator[str]:
    """A database of its own on `server` for the time of the block (then dropped); its URL."""
    name = f"bench_{purpose}_{uuid.uuid4().hex[:8]}"
    create_database(server, name)
    try:
        yield database_url(server, name)
    finally:
        drop_database(server, name)


def _prepare_step_tables(url: str, rows: int) -> None:
    engine = sqlalchemy.create_engine(
        sqlalchemy.engine.make_url(url).set(drivername="postgresql+psycopg")
    )
    try:
        outbox_table.create(engine)
        inbox_table.create(engine)
        with engine.begin() as connection:
            for statement in NOTIFY_TRIGGER_DDL:
                connection.execute(sqlalchemy.text(statement))
            connection.execute(
                sqlalchemy.text(
                    "CREATE TABLE saga_rows (id uuid PRIMARY KEY, status text NOT NULL,"
                    " version integer NOT NULL, updated_at timestamptz NOT NULL)"
                )
            )
            connection.execute(
                sqlalchemy.text(
                    "INSERT INTO saga_rows SELECT gen_random_uuid(), 'PENDING', 0, now()"
                    " FROM generate_series(1, :rows)"
                ),
                {"rows": rows},
            )
    finally:
        engine.dispose()


async def step_commits(server: str, clients: int, seconds: float) -> Rate:
    """Saga-step transactions committed per second by `clients` connections, each on its own
    business row (no lock waits: the database's ceiling, not a hot row's)."""
    with scratch_database(server, "steps") as url:
        await asyncio.to_thread(_prepare_step_tables, url, clients)
        dsn = sync_dsn(url)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as connection:
            cursor = await connection.execute("SELECT id FROM saga_rows ORDER BY id")
            row_ids = [row[0] for row in await cursor.fetchall()]
        row = sample_row()
        started = time.perf_counter()
        deadline = started + seconds
        counts = await asyncio.gather(
            *(_step_client(dsn, row_id, row, deadline) for row_id in row_ids)
        )
        elapsed = time.perf_counter() - started
    return Rate(sum(counts), elapsed)


async def _step_client(dsn: str, row_id: uuid.UUID, row: dict[str, Any], deadline: float) -> int:
    headers = Jsonb(row["headers"])
    count = 0
    async with await psycopg.AsyncConnection.connect(dsn) as connection:
        while time.perf_counter() < deadline:
            async with connection.transaction():
                await connection.execute(
                    "INSERT INTO inbox (consumer, event_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    ("bench", str(uuid.uuid4())),
                )
                await connection.execute(
                    "UPDATE saga_rows SET status = %s, version = version + 1,"
                    " updated_at = now() WHERE id = %s",
                    ("CONFIRMED" if count % 2 else "RESERVED", row_id),
                )
                await connection.execute(
                    "INSERT INTO outbox (topic, key, value, headers) VALUES (%s, %s, %s, %s)",
                    (row["topic"], row["key"], row["value"], headers),
                )
            count += 1
    return count


async def broker_records(
    bootstrap_servers: str, security: kafka.KafkaSecurity, prefix: str, seconds: float
) -> Rate:
    """Records produced (`acks=all`, in chunks sent together as the relay sends a batch) and
    consumed by one reader, per second, on a scratch topic."""
    topic = f"{prefix}bench.ceiling.{uuid.uuid4().hex[:8]}"
    await kafka.ensure_topics(bootstrap_servers, [topic], partitions=_PARTITIONS, security=security)
    try:
        return await _produce_and_consume(bootstrap_servers, security, topic, seconds)
    finally:
        await _delete_topic(bootstrap_servers, security, topic)


async def _produce_and_consume(
    bootstrap_servers: str, security: kafka.KafkaSecurity, topic: str, seconds: float
) -> Rate:
    row = sample_row()
    headers = [(name, value.encode()) for name, value in row["headers"].items()]
    keys = [str(uuid.uuid4()).encode() for _ in range(_KEYS)]
    producer = kafka.producer(bootstrap_servers, client_id="choreo-bench", security=security)
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        client_id="choreo-bench",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=kafka.FAST_FETCH_MAX_WAIT_MS,
        **security.client_options(),
    )
    await producer.start()
    await reader.start()
    try:
        reader.assign([TopicPartition(topic, p) for p in range(_PARTITIONS)])
        produced = consumed = 0
        last_consumed = time.perf_counter()
        producing = True

        async def consume() -> None:
            nonlocal consumed, last_consumed
            while producing or consumed < produced:
                batch = await reader.getmany(timeout_ms=200)
                got = sum(len(records) for records in batch.values())
                if got:
                    consumed += got
                    last_consumed = time.perf_counter()
                elif time.perf_counter() - last_consumed > _DRAIN_TIMEOUT:
                    raise TimeoutError(f"{produced - consumed} records of {topic} never came")

        consuming = asyncio.create_task(consume())
        started = time.perf_counter()
        number = 0
        while time.perf_counter() < started + seconds:
            sent = []
            for _ in range(_SEND_CHUNK):
                sent.append(
                    await producer.send(
                        topic, value=row["value"], key=keys[number % _KEYS], headers=headers
                    )
                )
                number += 1
            await asyncio.gather(*sent)
            produced += len(sent)
        producing = False
        await consuming
        return Rate(produced, last_consumed - started)
    finally:
        await reader.stop()
        await producer.stop()


async def _delete_topic(bootstrap_servers: str, security: kafka.KafkaSecurity, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **security.client_options())
    try:
        await admin.start()
        await admin.delete_topics([topic])
    except Exception:  # a broker that keeps it holds a few MB until it restarts: no matter
        pass
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def bench_server(
    kind: str, port: int, arguments: list[str], output: OutputSink
) -> AsyncIterator[ChildProcess]:
    """One of `choreo.bench.servers` running as its own process, ready, until the block ends.

    Spawned from the main thread, so that it dies with the bench (a parent-death signal)."""
    child = ChildProcess(
        ProcessSpec(
            name=f"bench-{kind}",
            command=[
                sys.executable,
                *("-m", "choreo.bench.servers", kind, "--port", str(port)),
                *arguments,
            ],
            ready=http_ok(f"http://127.0.0.1:{port}/healthz"),
            port=port,
            stop_grace=5.0,
        ),
        output,
    )
    child.spawn()
    try:
        deadline = time.monotonic() + _SERVER_START_TIMEOUT
        while not await asyncio.to_thread(child.answers):
            if child.poll() is not None:
                raise PartExitedError(child.name, child.poll() or 0, child.tail())
            if time.monotonic() > deadline:
                raise ReadinessTimeoutError([child.name], _SERVER_START_TIMEOUT)
            await asyncio.sleep(0.1)
        yield child
    finally:
        await asyncio.to_thread(child.stop)


def free_port() -> int:
    """A free loopback port below the ephemeral range."""
    for port in random.sample(_PORT_RANGE, len(_PORT_RANGE)):
        if port_is_free(port):
            return port
    raise OSError("no free port")


async def bare_requests(port: int, clients: int, seconds: float, output: OutputSink) -> Rate:
    """Requests per second of a bare FastAPI app (one route, no middleware, one uvicorn process
    as each service has), from `clients` concurrent requests of the bench's HTTP client."""
    async with (
        bench_server("bare", port, [], output),
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=clients), raise_for_status=True, trust_env=False
        ) as client,
    ):
        url = f"http://127.0.0.1:{port}/ping"
        started = time.perf_counter()
        deadline = started + seconds

        async def requester() -> int:
            count = 0
            while time.perf_counter() < deadline:
                async with client.get(url) as response:
                    await response.read()
                count += 1
            return count

        counts = await asyncio.gather(*(requester() for _ in range(clients)))
        return Rate(sum(counts), time.perf_counter() - started)
