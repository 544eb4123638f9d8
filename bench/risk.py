"""Risk-screening benchmark: the payment service's risk step alone (counters, lists, decision,
its attempt and decision committed), beside the payment database's commit rate.

    python -m bench.risk [--seconds 10] [--rate 200] [--history 20000] [--json PATH]

Starts embedded PostgreSQL on a free port (or uses BENCH_DATABASE_URL, a server URL), migrates
a fresh payment database, and fills it with `--history` earlier attempts over 2,000 cards, 500
IP addresses and 5,000 customers in the last hour, and 1,000 list entries, so the counters read
real indexes. Then, in the same run:

- baseline: commits/s of a plain single-row INSERT on that database (one connection);
- the risk step closed-loop (8 in flight) for `--seconds`: evaluations/s, and as a ratio of it;
- the risk step open-loop at `--rate` evaluations/s for `--seconds` after a 2 s warm-up:
  p50/p95/p99/max latency (from its due time, so a backlog shows; the issue's aim: p99 <= 50
  ms at 200/s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench.relay import fresh_database, insert_commit_rate
from choreo.db import create_engine, sync_dsn, unit_of_work_factory
from choreo.migrate import migrate
from choreo.service import INDEPENDENT_POOL_SIZE
from choreo.stack.postgres import EmbeddedPostgres
from choreo.testing import free_port
from payment_service.handlers.screening import Charge, Screening, screen
from payment_service.risk import RiskPolicy

CARDS, ADDRESSES, CUSTOMERS = 2_000, 500, 5_000


def seed(dsn: str, history: int, chance: random.Random) -> None:
    """`history` attempts in the last hour and 1,000 list entries."""
    now = datetime.now(UTC)
    with psycopg.connect(sync_dsn(dsn)) as connection, connection.cursor() as cursor:
        with cursor.copy(
            "COPY risk_attempts (order_id, user_id, card_fingerprint, client_ip, amount,"
            " declined, attempted_at) FROM STDIN"
        ) as copy:
            for _ in range(history):
                copy.write_row(
                    (
                        uuid.uuid4(),
                        f"user-{chance.randrange(CUSTOMERS)}",
                        f"fp-{chance.randrange(CARDS)}",
                        f"10.0.{chance.randrange(2)}.{chance.randrange(ADDRESSES // 2)}",
                        chance.randrange(500, 20_000),
                        chance.random() < 0.05,
                        now - timedelta(seconds=chance.uniform(0, 3600)),
                    )
                )
        for number in range(1_000):
            cursor.execute(
                "INSERT INTO risk_list_entries (kind, value, action, created_by)"
                " VALUES ('card_fingerprint', %s, 'block', 'bench')",
                (f"blocked-{number}",),
            )


def charge(chance: random.Random) -> Charge:
    return Charge(
        order_id=uuid.uuid4(),
        user_id=f"user-{chance.randrange(CUSTOMERS)}",
        amount=chance.randrange(500, 20_000),
        currency="USD",
        client_ip=f"10.0.{chance.randrange(2)}.{chance.randrange(ADDRESSES // 2)}",
        card_fingerprint=f"fp-{chance.randrange(CARDS)}",
    )


async def evaluate(screening: Screening, reader: Any, chance: random.Random) -> float:
    """One risk step, as the saga runs it (the handler's session reads the stored decision, the
    step commits its own transaction); its seconds."""
    started = time.perf_counter()
    async with reader() as uow:
        await screen(uow.session, screening, charge(chance), datetime.now(UTC))
    return time.perf_counter() - started


async def closed_loop(screening: Screening, reader: Any, seconds: float, clients: int) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def client(number: int) -> None:
        nonlocal done
        chance = random.Random(number)
        while time.perf_counter() < stop:
            await evaluate(screening, reader, chance)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return done / (time.perf_counter() - started)


async def open_loop(
    screening: Screening, reader: Any, seconds: float, rate: float, warmup: float = 2.0
) -> dict[str, float]:
    """Start one evaluation every 1/rate s; each latency runs from its due time. The first
    `warmup` seconds are left out (the pool grows to what the rate needs)."""
    chance = random.Random(7)
    latencies: list[float] = []
    tasks = []
    start = time.perf_counter()
    measured_from = start + warmup
    count = int((warmup + seconds) * rate)

    async def one(due: float) -> None:
        await evaluate(screening, reader, chance)
        if due >= measured_from:
            latencies.append(time.perf_counter() - due)

    for n in range(count):
        due = start + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    ordered = sorted(latencies)

    def percentile(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000

    return {
        "evaluations": len(ordered),
        "achieved_per_second": len(ordered) / (time.perf_counter() - measured_from),
        "p50_ms": percentile(0.50),
        "p95_ms": percentile(0.95),
        "p99_ms": percentile(0.99),
        "max_ms": ordered[-1] * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
    }


async def run(seconds: float, rate: float, history: int) -> dict[str, Any]:
    server = os.environ.get("BENCH_DATABASE_URL")
    with tempfile.TemporaryDirectory(prefix="choreo-bench-risk-") as scratch:
        postgres = None
        if server is None:
            postgres = EmbeddedPostgres(Path(scratch) / "pg", free_port())
            postgres.start()
            server = postgres.url("postgres")
        try:
            dsn = fresh_database(server)
            migrate("payment", dsn)
            print(f"seeding {history} attempts and 1000 list entries", flush=True)
            seed(dsn, history, random.Random(1))
            baseline = insert_commit_rate(dsn, seconds)
            print(f"baseline: {baseline:.0f} single-row INSERT commits/s", flush=True)
            # As in the service: the handlers' pool, and the small independent pool the
            # screening commits on (one pool for both starves: every connection held by a
            # handler waiting for a second one).
            engine = create_engine(dsn)
            independent = create_engine(dsn, pool_size=INDEPENDENT_POOL_SIZE)
            factory = unit_of_work_factory(engine)
            screening = Screening(
                policy=RiskPolicy(),
                new_unit_of_work=unit_of_work_factory(independent),
                timeout=timedelta(seconds=2),
                review_expiry=timedelta(days=7),
            )
            try:
                throughput = await closed_loop(screening, factory, seconds, clients=8)
                print(f"closed loop (8 in flight): {throughput:.0f} evaluations/s", flush=True)
                latency = await open_loop(screening, factory, seconds, rate)
                print(
                    f"open loop at {rate:g}/s: p50 {latency['p50_ms']:.1f} ms, "
                    f"p99 {latency['p99_ms']:.1f} ms, max {latency['max_ms']:.1f} ms",
                    flush=True,
                )
            finally:
                await engine.dispose()
                await independent.dispose()
        finally:
            if postgres is not None:
                postgres.stop()
    return {
        "history_attempts": history,
        "baseline_insert_commits_per_second": baseline,
        "evaluations_per_second": throughput,
        "evaluations_per_commit_of_baseline": throughput / baseline,
        "open_loop": {"rate_per_second": rate, **latency},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="Each phase's length.")
    parser.add_argument("--rate", type=float, default=200.0, help="Open-loop evaluations/s.")
    parser.add_argument("--history", type=int, default=20_000, help="Earlier attempts seeded.")
    parser.add_argument("--json", type=Path, help="Write the figures here too.")
    arguments = parser.parse_args()
    figures = asyncio.run(run(arguments.seconds, arguments.rate, arguments.history))
    print(json.dumps(figures, indent=2))
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
