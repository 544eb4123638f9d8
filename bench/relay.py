"""Relay benchmark: outbox -> Kafka throughput and commit -> consume latency.

    python -m bench.relay [--events 20000] [--latency-events 2000] [--json PATH]

Starts embedded PostgreSQL and Tansu on free ports (or uses BENCH_DATABASE_URL, a server URL,
and KAFKA_BOOTSTRAP_SERVERS, reached with the services' KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*
and KAFKA_SSL_*), and in the same run measures the baseline: the commit rate of a plain
single-row INSERT on that PostgreSQL, so the relay's figures read as a ratio of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer
from sqlalchemy.engine import make_url

from choreo import kafka
from choreo.avro import default_store
from choreo.db import create_engine, sync_dsn, unit_of_work_factory
from choreo.migrate import migrate
from choreo.outbox import OutboxWriter, Relay
from choreo.records import StockLevelChanged
from choreo.stack.broker import TansuBroker
from choreo.stack.postgres import EmbeddedPostgres
from choreo.testing import free_port

KEYS = 200


@asynccontextmanager
async def infrastructure() -> AsyncIterator[tuple[str, str, kafka.KafkaSecurity]]:
    """(server DSN, bootstrap servers, how to reach them): the environment's, or embedded ones
    on free ports."""
    server = os.environ.get("BENCH_DATABASE_URL")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    security = kafka.KafkaSecurity.from_environment(os.environ) if bootstrap else kafka.PLAINTEXT
    with tempfile.TemporaryDirectory(prefix="choreo-bench-") as scratch:
        postgres = broker = None
        if server is None:
            postgres = EmbeddedPostgres(Path(scratch) / "pg", free_port())
            postgres.start()
            server = postgres.url("postgres")
        if bootstrap is None:
            broker = TansuBroker(free_port())
            broker.start()
            bootstrap = broker.bootstrap_servers
        try:
            yield server, bootstrap, security
        finally:
            if broker is not None:
                broker.stop()
            if postgres is not None:
                postgres.stop()


def fresh_database(server: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(sync_dsn(server), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server).set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False)


def insert_commit_rate(dsn: str, seconds: float) -> float:
    """Baseline: commits/s of a single-row INSERT, one connection, one row per transaction."""
    with psycopg.connect(sync_dsn(dsn), autocommit=True) as connection:
        connection.execute("CREATE TABLE baseline (id bigserial PRIMARY KEY, payload bytea)")
        payload = os.urandom(200)
        count, deadline = 0, time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            connection.execute("INSERT INTO baseline (payload) VALUES (%s)", (payload,))
            count += 1
        return count / (time.perf_counter() - started)


def event(key: str, seq: int) -> StockLevelChanged:
    return StockLevelChanged(
        product_id=key, available=seq, reserved=0, sold=0, changed_at=datetime.now(UTC)
    )


async def relay_throughput(
    dsn: str, bootstrap: str, security: kafka.KafkaSecurity, events: int
) -> dict[str, Any]:
    """Fill the outbox with `events` rows, then time the relay draining it to the broker."""
    engine = create_engine(dsn)
    uow_factory = unit_of_work_factory(engine, OutboxWriter(default_store(), "/bench", str))
    keys = [str(uuid.uuid4()) for _ in range(KEYS)]
    for start in range(0, events, 1000):
        async with uow_factory() as uow:
            for seq in range(start, min(start + 1000, events)):
                uow.publish(event(keys[seq % KEYS], seq))
    await engine.dispose()
    producer = kafka.producer(bootstrap, security=security)
    await producer.start()
    relay = Relay(sync_dsn(dsn), producer, batch_size=1000)
    started = time.perf_counter()
    task = asyncio.create_task(relay.run())
    while relay.published < events:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    relay.stop()
    await task
    await producer.stop()
    return {"events": events, "seconds": round(elapsed, 3), "events_per_s": events / elapsed}


async def commit_to_consume_latency(
    dsn: str, bootstrap: str, security: kafka.KafkaSecurity, topic: str, events: int, rate: float
) -> dict[str, Any]:
    """Commit one event per transaction at `rate`/s; time each commit -> consumer receipt."""
    engine = create_engine(dsn)
    uow_factory = unit_of_work_factory(engine, OutboxWriter(default_store(), "/bench", str))
    producer = kafka.producer(bootstrap, security=security)
    await producer.start()
    relay = Relay(sync_dsn(dsn), producer, poll_interval=1.0)
    relay_task = asyncio.create_task(relay.run())
    reader = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        **security.client_options(),
        # From the start: a reader told "latest" before its partitions are assigned can miss
        # the first records. The throughput phase's records are skipped by id below.
        auto_offset_reset="earliest",
        fetch_max_wait_ms=kafka.FETCH_MAX_WAIT_MS,
    )
    await reader.start()
    committed: dict[str, float] = {}
    received: dict[str, float] = {}
    writing = True

    async def consume() -> None:
        while writing or not committed.keys() <= received.keys():
            for records in (await reader.getmany(timeout_ms=200)).values():
                now = time.perf_counter()
                for record in records:
                    received.setdefault(dict(record.headers)["ce_id"].decode(), now)

    consuming = asyncio.create_task(consume())
    keys = [str(uuid.uuid4()) for _ in range(KEYS)]
    for seq in range(events):
        async with uow_factory() as uow:
            published = uow.publish(event(keys[seq % KEYS], seq))
        committed[published.id] = time.perf_counter()
        await asyncio.sleep(1 / rate)
    writing = False
    await asyncio.wait_for(consuming, 60)
    # A record can arrive while its writer is still closing its session: clamp at zero.
    latencies = [max(0.0, received[i] - t) for i, t in committed.items()]
    relay.stop()
    await relay_task
    await reader.stop()
    await producer.stop()
    await engine.dispose()
    ordered = sorted(latencies)
    return {
        "events": events,
        "rate_per_s": rate,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "max_ms": 1000 * ordered[-1],
    }


async def run(events: int, latency_events: int, rate: float) -> dict[str, Any]:
    async with infrastructure() as (server, bootstrap, security):
        baseline_db = fresh_database(server)
        baseline = await asyncio.to_thread(insert_commit_rate, baseline_db, 5.0)
        dsn = fresh_database(server)
        await asyncio.to_thread(migrate, "order", dsn)
        topic = "stock.updated"
        await kafka.ensure_topics(bootstrap, [topic], partitions=6, security=security)
        throughput = await relay_throughput(dsn, bootstrap, security, events)
        latency = await commit_to_consume_latency(
            dsn, bootstrap, security, topic, latency_events, rate
        )
    return {
        "baseline_insert_commits_per_s": baseline,
        "relay": throughput,
        "relay_vs_insert_commit_rate": throughput["events_per_s"] / baseline,
        "latency": latency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="rows the relay drains")
    parser.add_argument("--latency-events", type=int, default=2_000, help="latency samples")
    parser.add_argument("--rate", type=float, default=500.0, help="commits/s in latency run")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    result = asyncio.run(run(args.events, args.latency_events, args.rate))
    print(f"baseline single-row INSERT commits/s : {result['baseline_insert_commits_per_s']:.0f}")
    relay = result["relay"]
    print(f"relay throughput events/s            : {relay['events_per_s']:.0f}")
    print(f"  ratio to INSERT commit rate        : {result['relay_vs_insert_commit_rate']:.2f}")
    latency = result["latency"]
    print(
        f"commit -> consume latency at {latency['rate_per_s']:.0f}/s: "
        f"p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
