"""The figures of a run, from the sagas the driver noted and the counters read at the edges of
the measured window: throughput, latency, CPU and costs per saga, the ceiling R* and η."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from choreo.bench.counters import BENCH_PROCESS, Snapshot
from choreo.bench.load import Driver, Kind, Saga, Verdict

SERVICES = ("gateway", "user", "order", "payment", "inventory", "notification")
INFRASTRUCTURE = ("postgres", "broker", "s3")
"""The broker counts with its storage: with --durable-broker, the S3 store holds its records."""
EMULATORS = ("stripe", "sendgrid", "twilio")
STRIPE_CALLS_PER_CHARGE = 2
"""The payment service creates a PaymentIntent, then confirms it (payment_service.handlers.saga);
localstripe counts no requests, so this is stated, not measured."""


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (no interpolation): a value that was measured."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def distribution_ms(values: Sequence[float]) -> dict[str, float | int | None]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(1000 * value, 1)

    return {
        "count": len(values),
        "p50": ms(percentile(values, 0.50)),
        "p95": ms(percentile(values, 0.95)),
        "p99": ms(percentile(values, 0.99)),
        "max": ms(max(values) if values else None),
    }


def saga_figures(driver: Driver, now: float) -> dict[str, Any]:
    """Counts, throughput and latency of the sagas placed."""
    plan = driver.plan
    sagas = driver.sagas
    verdicts = Counter(saga.verdict(now, plan.outcome_timeout) for saga in sagas)
    measured = [saga for saga in sagas if saga.measured]
    window = (driver.measured_from, driver.measured_until)
    ended_in_window = [
        saga
        for saga in sagas
        if saga.outcome is not None and window[0] <= saga.outcome.at < window[1]
    ]
    ok_in_window = [
        s for s in ended_in_window if s.verdict(now, plan.outcome_timeout) is Verdict.OK
    ]
    failures: Counter[str] = Counter()
    for saga in sagas:
        if saga.verdict(now, plan.outcome_timeout) is Verdict.FAILED:
            failures[_failure(saga)] += 1
    by_kind = {
        kind.value: dict(
            Counter(s.verdict(now, plan.outcome_timeout).value for s in sagas if s.kind is kind)
        )
        for kind in Kind
        if any(s.kind is kind for s in sagas)
    }
    return {
        "placed": len(sagas),
        "measured": len(measured),
        "ok": verdicts[Verdict.OK],
        "failed": verdicts[Verdict.FAILED],
        "lost": verdicts[Verdict.LOST] + verdicts[Verdict.PENDING],
        "failures": dict(failures),
        "by_kind": by_kind,
        "ended_in_window": len(ended_in_window),
        "sagas_per_s": len(ok_in_window) / plan.duration,
        "ended_per_s": len(ended_in_window) / plan.duration,
        "offered_per_s": len(measured) / plan.duration,
        "latency_ms": distribution_ms(
            [
                s.latency
                for s in measured
                if s.latency is not None and s.verdict(now, plan.outcome_timeout) is Verdict.OK
            ]
        ),
        "post_latency_ms": distribution_ms(
            [s.post_latency for s in measured if s.post_latency is not None and s.status == 202]
        ),
    }


def _failure(saga: Saga) -> str:
    if saga.order_id is None:
        return f"POST /orders: {saga.error or 'no answer'}"
    assert saga.outcome is not None
    what = saga.outcome.type
    if saga.outcome.reason:
        what += f" {saga.outcome.reason}"
    return f"{saga.kind.value} order ended {what}"


def series(driver: Driver) -> dict[str, list[float | None]]:
    """Per second since the load started: orders due, sagas ended (by when their outcome was on
    the topic), and the latency percentiles of the sagas due in that second."""
    start = driver.started
    ends = [s.outcome.at for s in driver.sagas if s.outcome is not None]
    last = max([driver.stopped, *ends]) if ends else driver.stopped
    seconds = max(1, math.ceil(last - start))
    due: list[float | None] = [0.0] * seconds
    ended: list[float | None] = [0.0] * seconds
    latencies: list[list[float]] = [[] for _ in range(seconds)]
    for saga in driver.sagas:
        index = min(seconds - 1, max(0, int(saga.due - start)))
        due[index] = (due[index] or 0.0) + 1
        if saga.outcome is not None:
            latencies[index].append(saga.latency or 0.0)
            at = min(seconds - 1, max(0, int(saga.outcome.at - start)))
            ended[at] = (ended[at] or 0.0) + 1

    def ms(values: list[float], fraction: float) -> float | None:
        found = percentile(values, fraction)
        return None if found is None else round(1000 * found, 1)

    return {
        "second": [float(second) for second in range(seconds)],
        "due_per_s": due,
        "ended_per_s": ended,
        "p50_ms": [ms(values, 0.50) for values in latencies],
        "p95_ms": [ms(values, 0.95) for values in latencies],
        "p99_ms": [ms(values, 0.99) for values in latencies],
    }


def cpu_per_saga(before: Snapshot, after: Snapshot, sagas: int) -> dict[str, Any]:
    """CPU milliseconds per saga ended in the window, per process, and summed by group."""
    spent = {
        name: after.cpu[name] - before.cpu[name]
        for name in after.cpu
        if name in before.cpu and before.pids.get(name) == after.pids.get(name)
    }
    restarted = sorted(name for name in after.cpu if name != BENCH_PROCESS and name not in spent)
    per_saga = {name: 1000 * seconds / sagas for name, seconds in spent.items()} if sagas else {}
    elapsed = after.at - before.at
    machine = (after.machine - before.machine) / elapsed
    return {
        "machine_cores_busy": round(machine, 3),
        "other_processes_cores": round(max(0.0, machine - sum(spent.values()) / elapsed), 3),
        "ms_per_saga": {name: round(value, 2) for name, value in sorted(per_saga.items())},
        "services_broker_postgres_ms": _sum(per_saga, SERVICES + INFRASTRUCTURE),
        "services_ms": _sum(per_saga, SERVICES),
        "emulators_ms": _sum(per_saga, EMULATORS),
        "stack_ms": _sum(per_saga, SERVICES + INFRASTRUCTURE + EMULATORS),
        "cores_busy": {
            name: round(seconds / (after.at - before.at), 3) for name, seconds in spent.items()
        },
        "not_measured": restarted,
    }


def idle_cores(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    elapsed = after.at - before.at
    cores = {
        name: round((after.cpu[name] - before.cpu[name]) / elapsed, 4)
        for name in after.cpu
        if name in before.cpu and name != BENCH_PROCESS
    }
    machine = (after.machine - before.machine) / elapsed
    busy = sum(after.cpu[name] - before.cpu[name] for name in after.cpu if name in before.cpu)
    return {
        "seconds": round(elapsed, 2),
        "cores": cores,
        "total_cores": round(sum(cores.values()), 4),
        "machine_cores_busy": round(machine, 3),
        "other_processes_cores": round(max(0.0, machine - busy / elapsed), 3),
    }


def costs_per_saga(
    before: Snapshot, after: Snapshot, sagas: int, charged_share: float
) -> dict[str, Any]:
    """Outbox rows, inbox rows, commits, database sessions opened (each a PostgreSQL backend
    started: a pool that closes what it opened shows here) and HTTP requests per saga ended in
    the window."""
    if not sagas:
        return {}

    def per_saga(field: str) -> float:
        return (
            sum(
                after.databases[name][field] - before.databases[name][field]
                for name in after.databases
                if name in before.databases
            )
            / sagas
        )

    outbox, inbox, commits = per_saga("outbox"), per_saga("inbox"), per_saga("commits")
    sessions = per_saga("sessions")
    served = sum(after.requests[name] - before.requests.get(name, 0) for name in after.requests)
    emails = (
        (after.emails - before.emails) / sagas
        if after.emails is not None and before.emails is not None
        else None
    )
    stripe = STRIPE_CALLS_PER_CHARGE * charged_share
    services = served / sagas
    return {
        "outbox_rows": round(outbox, 2),
        "inbox_rows": round(inbox, 2),
        "commits": round(commits, 2),
        "sessions": round(sessions, 3),
        "step_transactions": round(inbox + 1, 2),
        "http_requests": {
            "services": round(services, 2),
            "stripe": round(stripe, 2),
            "emails": None if emails is None else round(emails, 2),
            "total": round(services + stripe + (emails or 0.0), 2),
        },
    }


def ceiling_figures(
    costs: Mapping[str, Any],
    commits_per_s: float,
    records_per_s: float,
    requests_per_s: float,
    sagas_per_s: float,
) -> dict[str, Any]:
    """R*: the sagas/s the primitives alone would allow, 1/R* = Σ count per saga ÷ rate; and η."""
    if not costs or min(commits_per_s, records_per_s, requests_per_s) <= 0:
        return {}
    terms = {
        "step_transactions": costs["step_transactions"] / commits_per_s,
        "records": costs["outbox_rows"] / records_per_s,
        "http_requests": costs["http_requests"]["total"] / requests_per_s,
    }
    seconds_per_saga = sum(terms.values())
    r_star = 1 / seconds_per_saga if seconds_per_saga > 0 else None
    return {
        "r_star_sagas_per_s": r_star,
        "eta": sagas_per_s / r_star if r_star else None,
        "ms_per_saga_by_primitive": {name: round(1000 * v, 3) for name, v in terms.items()},
    }


def _sum(values: Mapping[str, float], names: Sequence[str]) -> float:
    return round(sum(values.get(name, 0.0) for name in names), 2)
