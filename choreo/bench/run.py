"""One `choreo bench` run against a target stack: set-up, idle CPU, the load with its reader
of `order.event`, the ceiling, the synchronous baseline; the figures as one JSON document."""

from __future__ import annotations

import asyncio
import os
import platform
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from choreo.bench import ceiling as primitives
from choreo.bench.baseline import baseline_json, run_baseline
from choreo.bench.counters import Snapshot, cpu_snapshot, snapshot
from choreo.bench.figures import (
    ceiling_figures,
    costs_per_saga,
    cpu_per_saga,
    distribution_ms,
    idle_cores,
    saga_figures,
    series,
)
from choreo.bench.load import Driver, Gateway, Kind, Shop, Verdict, set_up
from choreo.bench.outcomes import Outcomes
from choreo.bench.plan import EXTERNAL_LIMITS_NOTE, Plan
from choreo.bench.report import Reporter
from choreo.bench.target import Target
from choreo.kafka import KafkaSecurity

_SETTLE_SECONDS = 5.0
"""Quiet time before the idle measurement and the ceiling: the set-up's (or the load's) last
events are consumed, the last e-mails sent."""

QUIET_CORES = 0.25
"""The stack is settled once it uses less than this for `_QUIET_SECONDS` in a row (idle it
uses 0.03-0.08 cores on this project's 2-core machine; issue 14)."""
_QUIET_SECONDS = 3.0
SETTLE_LIMIT_SECONDS = 900.0
"""How long the bench waits for a busy stack before it measures anyway (and says so)."""


def _discard(part: str, line: str) -> None:
    """The bench servers' output is not shown (their failures are, with their last lines)."""


async def measure(
    plan: Plan, target: Target, security: KafkaSecurity, reporter: Reporter
) -> dict[str, Any]:
    result: dict[str, Any] = {"run": _run_facts(plan, target)}
    if not target.started:
        reporter.say(EXTERNAL_LIMITS_NOTE)
    gateway = Gateway(target.gateway, connections=_connections(plan))
    try:
        shop = await set_up(gateway, plan, target.admin, reporter.say)
        result["settle"] = await _settle(target, reporter)
        if plan.idle_seconds > 0:
            # Before the outcome reader starts: its polls would be the broker's busiest work.
            result["idle"] = await _idle(plan, target, reporter)
        # A closed loop places each order once the last one's outcome is seen, so its reader
        # polls as often as the services; an open loop's latency comes from the records'
        # timestamps, whenever they are read, so its reader polls as a quiet consumer would
        # and adds no polls of its own to the broker's CPU per saga (issue 14).
        fast = plan.closed_loop and not plan.durable_broker
        async with Outcomes(
            target.bootstrap_servers, target.topic_prefix, security, fast=fast
        ) as outcomes:
            await _load(plan, target, shop, gateway, outcomes, reporter, result)
    finally:
        await gateway.aclose()
    if plan.ceiling_seconds > 0 or plan.baseline_seconds > 0:
        await _pause(_SETTLE_SECONDS, "letting the stack settle", reporter)
    if plan.ceiling_seconds > 0:
        result["ceiling"] = await _ceiling(plan, target, security, reporter, result)
    if plan.baseline_seconds > 0:
        result["baseline"] = await _baseline(plan, target, reporter, result)
    result["restarts"] = {name: count for name, count in target.restarts().items() if count}
    return result


def _connections(plan: Plan) -> int:
    """Open-loop, a connection for each order of 10 s (the gateway's upstream timeout), so that
    the client's pool does not cap the load it offers; closed-loop, one per worker."""
    if plan.concurrency is not None:
        return plan.concurrency
    assert plan.rate is not None
    return max(64, min(1000, int(plan.rate * 10)))


def _run_facts(plan: Plan, target: Target) -> dict[str, Any]:
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load": plan.describe_load(),
        "mode": "closed-loop" if plan.closed_loop else "open-loop",
        "rate_per_s": plan.rate,
        "concurrency": plan.concurrency,
        "warmup_s": plan.warmup,
        "duration_s": plan.duration,
        "declined_share": plan.declined_share,
        "out_of_stock_share": plan.out_of_stock_share,
        "customers": plan.customers,
        "products": plan.products,
        "outcome_timeout_s": plan.outcome_timeout,
        "stack": "started by the bench" if target.started else f"running, gateway {target.gateway}",
        "broker": "durable (S3 on SeaweedFS)" if plan.durable_broker else "memory",
        "partitions": plan.partitions,
        "limits_raised": dict(target.limits),
        "cpu_source": "/proc/<pid>/stat: utime+stime+cutime+cstime of each part's process tree",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
    }


async def _pause(seconds: float, what: str, reporter: Reporter) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        reporter.tick(f"{what}: {left:.0f} s")
        await asyncio.sleep(min(1.0, left))
    reporter.done()


async def _settle(target: Target, reporter: Reporter) -> dict[str, Any]:
    """Wait, at least `_SETTLE_SECONDS`, until the stack is quiet: a stack just started on a
    used data directory may still be busy (with the memory broker, each relay publishes again
    the last 15 minutes of its outbox, and every consumer reads it through its inbox), and a
    load measured meanwhile would measure that catching-up too. Returns how long it took."""
    started = time.monotonic()
    await _pause(_SETTLE_SECONDS, "letting the set-up settle", reporter)
    quiet_since: float | None = None
    previous = await asyncio.to_thread(cpu_snapshot, target)
    cores = 0.0
    while True:
        now = time.monotonic()
        if quiet_since is not None and now - quiet_since >= _QUIET_SECONDS:
            break
        if now - started >= SETTLE_LIMIT_SECONDS:
            reporter.done()
            reporter.say(
                f"the stack is still busy ({cores:.2f} cores) after {SETTLE_LIMIT_SECONDS:.0f} "
                "s: measuring anyway"
            )
            return {"seconds": round(now - started, 1), "settled": False}
        await asyncio.sleep(1.0)
        current = await asyncio.to_thread(cpu_snapshot, target)
        cores = idle_cores(previous, current)["total_cores"]
        previous = current
        quiet_since = (quiet_since or time.monotonic()) if cores < QUIET_CORES else None
        reporter.tick(
            f"letting the set-up settle: the stack uses {cores:.2f} cores "
            f"({time.monotonic() - started:.0f} s)"
        )
    reporter.done()
    waited = time.monotonic() - started
    if waited > _SETTLE_SECONDS + _QUIET_SECONDS + 5:
        reporter.say(f"the stack settled after {waited:.0f} s")
    return {"seconds": round(waited, 1), "settled": True}


async def _idle(plan: Plan, target: Target, reporter: Reporter) -> dict[str, Any]:
    before = await asyncio.to_thread(cpu_snapshot, target)
    await _pause(plan.idle_seconds, "measuring the idle stack", reporter)
    after = await asyncio.to_thread(cpu_snapshot, target)
    figures = idle_cores(before, after)
    reporter.say(f"idle: the stack used {figures['total_cores']:.3f} cores with no traffic")
    return figures


async def _load(
    plan: Plan,
    target: Target,
    shop: Shop,
    gateway: Gateway,
    outcomes: Outcomes,
    reporter: Reporter,
    result: dict[str, Any],
) -> None:
    driver = Driver(plan, shop, gateway, outcomes)
    edges: list[Snapshot] = []
    phase = "load"

    async def at(moment: Callable[[], float]) -> None:
        await asyncio.sleep(max(0.0, moment() - time.time()))
        edges.append(await asyncio.to_thread(snapshot, target))

    async def edges_of_window() -> None:
        await asyncio.sleep(0)  # the driver sets its start first
        await at(lambda: driver.measured_from)
        await at(lambda: driver.measured_until)

    def draining() -> None:
        nonlocal phase
        phase = "draining"

    async def progress() -> None:
        while True:
            await asyncio.sleep(1.0)
            outcomes.check()
            reporter.tick(_progress_line(driver, phase))

    reporter.say(f"load: {plan.describe_load()}")
    edges_task = asyncio.create_task(edges_of_window())
    ticking = asyncio.create_task(progress())
    try:
        await _first_of(driver.run(draining), ticking)
        await edges_task
    finally:
        ticking.cancel()
        edges_task.cancel()
        reporter.done()
    result["restarts_during_load"] = {
        name: count for name, count in target.restarts().items() if count
    }
    now = time.time()
    sagas = saga_figures(driver, now)
    result["sagas"] = sagas
    result["series"] = series(driver)
    before, after = edges
    ended = sagas["ended_in_window"]
    result["cpu"] = cpu_per_saga(before, after, ended)
    # Orders out of stock are cancelled before the payment service charges anything.
    charged = sum(1 for s in driver.sagas if s.kind is not Kind.OUT_OF_STOCK) / max(
        1, len(driver.sagas)
    )
    result["costs_per_saga"] = costs_per_saga(before, after, ended, charged)
    reporter.say(
        f"load done: {sagas['ok']} sagas as expected, {sagas['failed']} failed, "
        f"{sagas['lost']} lost; {sagas['sagas_per_s']:.1f} sagas/s sustained"
    )


async def _first_of(work: Awaitable[None], watcher: asyncio.Task[None]) -> None:
    """Run `work`; stop early with the watcher's error if it fails first."""
    working = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({working, watcher}, return_when=asyncio.FIRST_COMPLETED)
    if watcher in done and not working.done():
        working.cancel()
        watcher.result()
    await working


def _progress_line(driver: Driver, phase: str) -> str:
    now = time.time()
    plan = driver.plan
    elapsed = now - driver.started
    verdicts = [saga.verdict(now, plan.outcome_timeout) for saga in driver.sagas]
    recent = [
        saga.latency
        for saga in driver.sagas
        if saga.latency is not None and saga.outcome is not None and now - saga.outcome.at < 5
    ]
    p50 = distribution_ms(recent)["p50"]
    window = "warm-up" if now < driver.measured_from else phase
    return (
        f"{window} {elapsed:.0f}/{plan.warmup + plan.duration:.0f} s: "
        f"{len(driver.sagas)} placed, {verdicts.count(Verdict.OK)} ended as expected, "
        f"{verdicts.count(Verdict.FAILED)} failed, {verdicts.count(Verdict.PENDING)} in flight"
        + (f", p50 of the last 5 s {p50:.0f} ms" if p50 is not None else "")
    )


async def _ceiling(
    plan: Plan,
    target: Target,
    security: KafkaSecurity,
    reporter: Reporter,
    result: dict[str, Any],
) -> dict[str, Any]:
    seconds = plan.ceiling_seconds
    figures: dict[str, Any] = {"seconds_each": seconds}
    if target.database_server is not None:
        steps = {}
        for clients in sorted({1, plan.ceiling_clients}):
            reporter.tick(f"ceiling: saga-step transactions, {clients} client(s), {seconds:g} s")
            rate = await primitives.step_commits(target.database_server, clients, seconds)
            steps[str(clients)] = rate.per_second
        figures["step_commits_per_s"] = steps
    reporter.tick(f"ceiling: broker records produced and consumed, {seconds:g} s")
    broker = await primitives.broker_records(
        target.bootstrap_servers, security, target.topic_prefix, seconds
    )
    figures["broker_records_per_s"] = broker.per_second
    reporter.tick(f"ceiling: bare FastAPI requests, {plan.ceiling_clients} clients, {seconds:g} s")
    http = await primitives.bare_requests(
        primitives.free_port(), plan.ceiling_clients, seconds, _discard
    )
    figures["http_requests_per_s"] = http.per_second
    figures["http_clients"] = plan.ceiling_clients
    reporter.done()
    commits = max(figures.get("step_commits_per_s", {}).values(), default=0.0)
    figures.update(
        ceiling_figures(
            result.get("costs_per_saga", {}),
            commits,
            broker.per_second,
            http.per_second,
            result["sagas"]["sagas_per_s"],
        )
    )
    eta = figures.get("eta")
    reporter.say(
        f"ceiling: {commits:,.0f} step commits/s, {broker.per_second:,.0f} records/s, "
        f"{http.per_second:,.0f} requests/s" + (f"; η = {eta:.3f}" if eta is not None else "")
    )
    return figures


async def _baseline(
    plan: Plan, target: Target, reporter: Reporter, result: dict[str, Any]
) -> dict[str, Any]:
    if target.database_server is None:
        return {"skipped": "no PostgreSQL server to make its databases on"}
    seconds = plan.baseline_seconds
    reporter.tick(
        f"synchronous baseline: closed-loop at {plan.baseline_concurrency}, {seconds:g} s"
    )
    measured = await run_baseline(
        server=target.database_server,
        stripe_api_base=target.stripe_api_base,
        stripe_api_key=target.stripe_api_key,
        sendgrid_host=target.sendgrid_host,
        sendgrid_api_key=target.sendgrid_api_key,
        port=primitives.free_port(),
        concurrency=plan.baseline_concurrency,
        seconds=seconds,
        products=plan.products,
        processes=target.processes,
        output=_discard,
    )
    reporter.done()
    figures = baseline_json(measured)
    figures["latency_ms"] = distribution_ms(measured.latencies)
    sagas_per_s = result["sagas"]["sagas_per_s"]
    figures["ratio"] = sagas_per_s / measured.per_second if measured.per_second else None
    if not plan.closed_loop:
        figures["note"] = (
            "open-loop: Choreo's sagas/s is the rate offered, not its capacity; a closed-loop "
            "run (--concurrency) compares capacities"
        )
    reporter.say(
        f"baseline: {measured.per_second:,.1f} orders/s at concurrency {plan.baseline_concurrency}"
    )
    return figures
