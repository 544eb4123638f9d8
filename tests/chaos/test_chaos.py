"""The stack under load while its parts are killed, in both broker modes; then `choreo verify`.

The stack is the one `choreo up` runs (`choreo.stack.Stack`, its supervisor restarting what
dies), on free ports. Orders go through the gateway at a steady rate (declined cards and
out-of-stock lines among them) while the chaos schedule SIGKILLs services (two at once now and
then), restarts PostgreSQL with SIGKILL and with SIGTERM (a "smart" shutdown), and kills the
broker (and the durable broker's S3 store). Every order must then end, within a bounded time,
and `choreo verify` must pass.

`CHAOS_ORDERS` (default 150) and `CHAOS_RATE` (orders/s; default 5) size the run and
`CHAOS_BROKERS` picks the broker modes (`memory`, `durable`; default `memory`); `make chaos`
runs 1,000 orders in both modes and prints the figures. With the memory broker, a broker kill
loses every record in flight: the relays publish their recent outbox rows again, consumers
re-read the new log, and order deadlines cancel what still cannot finish. The durable broker
loses nothing, so no order may end by its deadline, and orders get 15 minutes: every order must
finish the normal way, however long a restart takes.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from choreo.stack.config import StackConfig, StackPorts
from choreo.stack.stack import Stack
from choreo.testing import free_port

from .load import Load

ORDERS = int(os.environ.get("CHAOS_ORDERS", "150"))
BROKERS = os.environ.get("CHAOS_BROKERS", "memory").split(",")
RATES = {"memory": 5.0, "durable": 5.0}
# Order deadlines: with the memory broker a killed broker loses records and the deadline ends
# what cannot finish, so it is short; with the durable broker nothing may need its deadline to
# end, so the deadline is long enough for every order to finish the normal way.
DEADLINES = {
    "memory": {"ORDER_SAGA_TIMEOUT_SECONDS": "30", "PAYMENT_CHARGE_MARGIN_SECONDS": "5"},
    "durable": {"ORDER_SAGA_TIMEOUT_SECONDS": "900"},
}
SERVICES = ("gateway", "user", "order", "payment", "inventory", "notification")


@dataclass
class Running:
    stack: Stack
    lines: collections.deque[str]
    log: Path
    """Every line every part printed (kept after the run, for the post-mortem)."""

    def environment(self) -> dict[str, str]:
        """What an operator's shell needs to point `choreo` at this stack."""
        ports = self.stack.config.ports
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{ports.broker}",
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{ports.postgres}",
            "STRIPE_API_BASE": f"http://127.0.0.1:{ports.stripe}",
            "SENDGRID_HOST": f"http://127.0.0.1:{ports.sendgrid}",
        }


@pytest.fixture(params=BROKERS)
def running(request: pytest.FixtureRequest) -> Iterator[Running]:
    lines: collections.deque[str] = collections.deque(maxlen=400)
    log = Path(tempfile.gettempdir()) / f"choreo-chaos-{request.param}.log"
    with tempfile.TemporaryDirectory(prefix="choreo-chaos-") as scratch, log.open("w") as sink:
        writing = threading.Lock()

        def output(part: str, line: str) -> None:
            stamped = f"{time.strftime('%H:%M:%S')} {part}: {line}"
            lines.append(stamped)
            with writing:
                sink.write(stamped + "\n")

        environment = {
            **os.environ,
            "CHOREO_ENV": "dev",
            **DEADLINES.get(request.param, {}),
            "GATEWAY_RATE_LIMIT_PER_SECOND": "1000",
            "GATEWAY_RATE_LIMIT_BURST": "2000",
            "GATEWAY_ADDRESS_RATE_LIMIT_PER_SECOND": "1000",
            "GATEWAY_ADDRESS_RATE_LIMIT_BURST": "2000",
            # ... and one address for every sign-in: the user service limits those per address too.
            "USER_CREDENTIAL_ATTEMPTS_PER_ADDRESS": "1000",
            "USER_CREDENTIAL_ATTEMPTS_PER_ACCOUNT": "1000",
            # ... and the risk screening declines an address's 21st order in an hour, holds a
            # card's 6th in 10 minutes.
            "PAYMENT_RISK_ADDRESS_DECLINE_ATTEMPT": "100000",
            "PAYMENT_RISK_CARD_REVIEW_ATTEMPT": "100000",
            "PAYMENT_RISK_CARD_DECLINE_ATTEMPT": "100000",
            "PAYMENT_RISK_CARD_TESTING_DECLINES": "100000",
        }
        config = StackConfig(
            data_dir=Path(scratch) / "choreo",
            ports=StackPorts(**{name: free_port() for name in StackPorts.names()}),
            durable_broker=request.param == "durable",
            environment=environment,
            readiness_timeout=120.0,
            unready_grace=10.0,
        )
        stack = Stack(config, output=output)
        stop = threading.Event()
        watching = threading.Thread(
            target=stack.supervisor.watch, kwargs={"until": stop}, daemon=True
        )
        try:
            stack.start()
            watching.start()
            yield Running(stack, lines, log)
        finally:
            # The watcher first: one still watching would restart what stop() stops, and
            # those parts would outlive the test.
            stop.set()
            if watching.is_alive():
                watching.join(timeout=30)
            stack.stop()


async def chaos(running: Running, load: Load, seed: int) -> list[str]:
    """Kill parts as the orders go in; the supervisor restarts them. Returns what was done."""
    chance = random.Random(seed)
    supervisor = running.stack.supervisor
    steps: list[tuple[float, list[tuple[str, signal.Signals]]]] = [
        (0.10, [(chance.choice(SERVICES), signal.SIGKILL)]),
        (0.20, [(name, signal.SIGKILL) for name in chance.sample(SERVICES, 2)]),
        (0.30, [("postgres", signal.SIGKILL)]),
        (0.45, [("broker", signal.SIGKILL)]),
        (0.60, [("postgres", signal.SIGTERM)]),
        (0.70, [(chance.choice(SERVICES), signal.SIGKILL)]),
        (0.80, [(name, signal.SIGKILL) for name in chance.sample(SERVICES, 2)]),
    ]
    if running.stack.config.durable_broker:  # its S3 store too, while the broker runs
        steps.insert(4, (0.52, [("s3", signal.SIGKILL)]))
    done: list[str] = []
    for share, kills in steps:
        while len(load.orders) < share * ORDERS:
            await asyncio.sleep(0.2)
        for name, signum in kills:
            supervisor.kill(name, signum)
            done.append(f"{len(load.orders)} orders in: {signum.name} {name}")
    return done


def order_statuses(running: Running, order_ids: list[str]) -> collections.Counter[str]:
    url = running.stack.endpoints.database_urls["order"]
    with psycopg.connect(url, connect_timeout=5) as connection:
        rows = connection.execute(
            "SELECT status, coalesce(cancel_reason, '') FROM orders WHERE id = ANY(%s::uuid[])",
            (order_ids,),
        ).fetchall()
    return collections.Counter(f"{status} {reason}".strip() for status, reason in rows)


def verify(running: Running) -> dict[str, Any]:
    """`choreo verify --json`, as an operator runs it; its report."""
    command = [sys.executable, "-c", "from choreo.cli import main; main()", "verify", "--json"]
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, env=running.environment(), capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired as error:
        stderr = error.stderr.decode() if isinstance(error.stderr, bytes) else error.stderr
        return {"ok": False, "violations": [{"what": f"verify timed out: {stderr}"}]}
    report: dict[str, Any] = json.loads(done.stdout) if done.stdout else {}
    report.setdefault("ok", False)
    report.setdefault("violations", [{"what": f"verify printed nothing: {done.stderr}"}])
    print(
        f"verify: ok={report['ok']} in {time.monotonic() - started:.1f} s, "
        f"{len(report['violations'])} violation(s) {report['violations'][:3]}"
    )
    return report


async def test_orders_converge_and_verify_passes_while_parts_are_killed(
    running: Running,
) -> None:
    stack = running.stack
    admin = stack.admin()
    assert admin is not None
    load = Load(f"{stack.url_of('gateway')}/api/v1", seed=ORDERS)
    try:
        await load.set_up(admin, customers=20)
        started = time.monotonic()
        mode = "durable" if stack.config.durable_broker else "memory"
        rate = float(os.environ.get("CHAOS_RATE", RATES[mode]))
        placing = asyncio.create_task(load.place(ORDERS, rate))
        done = await chaos(running, load, seed=ORDERS)
        await placing
        placed_at = time.monotonic()
    finally:
        await load.aclose()

    # Every order ends: confirmed, or cancelled for a reason (at the latest by its deadline).
    deadline = float(stack.config.environment.get("ORDER_SAGA_TIMEOUT_SECONDS", "60"))
    ended_by = placed_at + deadline + 120
    statuses = order_statuses(running, load.orders)
    while sum(n for s, n in statuses.items() if s.split()[0] in ("CONFIRMED", "CANCELLED")) < len(
        load.orders
    ):
        assert time.monotonic() < ended_by, f"orders still open: {statuses}"
        await asyncio.sleep(2.0)
        statuses = order_statuses(running, load.orders)
    ended = time.monotonic()

    # Then the services agree, stock is conserved, each charge is once, each e-mail once.
    report = verify(running)
    while not report["ok"] and time.monotonic() < ended + 120:
        await asyncio.sleep(5.0)
        report = verify(running)
    verified = time.monotonic()

    figures = {
        "broker": mode,
        "rate (orders/s)": rate,
        "orders placed": len(load.orders),
        "statuses": dict(statuses),
        "placing took (s)": round(placed_at - started, 1),
        "orders ended after the last was placed (s)": round(ended - placed_at, 1),
        "verify passed after the last was placed (s)": round(verified - placed_at, 1),
        "restarts": dict(stack.supervisor.restart_counts()),
        "longest API unavailability (s)": round(load.availability.longest_down, 1),
        "requests that met an outage": load.availability.failed_requests,
        "chaos": done,
    }
    print("\nchaos figures: " + json.dumps(figures, indent=2))
    assert len(load.orders) == ORDERS
    if stack.config.durable_broker:
        assert "CANCELLED TIMEOUT" not in statuses, "the durable broker lost nothing to wait for"
    assert report["ok"], json.dumps(report["violations"][:20], indent=2) + f"\nlog: {running.log}"
