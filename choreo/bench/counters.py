"""What the stack has done so far, read at the edges of the measured window: CPU seconds per
process, outbox and inbox rows and commits per database, requests each service served, e-mails
the SendGrid sink took. The differences, per saga, are the run's costs."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from choreo.bench.cpu import cpu_seconds, machine_busy_seconds, own_cpu_seconds
from choreo.bench.target import Target
from choreo.db import sync_dsn

_OPERATIONS = {"/metrics", "/readyz", "/healthz"}
"""Routes that serve operators and probes, not the saga."""
BENCH_PROCESS = "bench"


@dataclass(frozen=True)
class Snapshot:
    at: float
    pids: Mapping[str, int]
    cpu: Mapping[str, float]
    """CPU seconds per part, and the bench's own process under BENCH_PROCESS."""
    databases: Mapping[str, Mapping[str, int]]
    """Per service database: `outbox` (rows written, by id), `inbox` (rows), `commits`,
    `sessions` (connections PostgreSQL accepted: pg_stat_database, PostgreSQL 14+)."""
    requests: Mapping[str, float]
    """Per service: HTTP requests served, operators' and probes' routes left out."""
    emails: int | None
    machine: float
    """CPU seconds the whole machine has used (every process, the stack's and others')."""


def snapshot(target: Target) -> Snapshot:
    pids = target.processes()
    cpu = cpu_seconds(pids)
    cpu[BENCH_PROCESS] = own_cpu_seconds()
    return Snapshot(
        at=time.time(),
        pids=pids,
        cpu=cpu,
        databases=_databases(target.database_urls),
        requests=_requests(target.service_urls),
        emails=_emails(target.sendgrid_host),
        machine=machine_busy_seconds(),
    )


def cpu_snapshot(target: Target) -> Snapshot:
    """Only the CPU seconds (the idle measurement)."""
    pids = target.processes()
    cpu = cpu_seconds(pids)
    cpu[BENCH_PROCESS] = own_cpu_seconds()
    return Snapshot(time.time(), pids, cpu, {}, {}, None, machine_busy_seconds())


def _databases(urls: Mapping[str, str]) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    for service, url in urls.items():
        try:
            with psycopg.connect(sync_dsn(url), autocommit=True, connect_timeout=5) as connection:
                row = connection.execute(
                    "SELECT (SELECT coalesce(max(id), 0) FROM outbox),"
                    " (SELECT count(*) FROM inbox),"
                    " (SELECT xact_commit FROM pg_stat_database"
                    "  WHERE datname = current_database()),"
                    " (SELECT sessions FROM pg_stat_database"
                    "  WHERE datname = current_database())"
                ).fetchone()
        except psycopg.Error:
            continue
        if row is not None:
            found[service] = {
                "outbox": int(row[0]),
                "inbox": int(row[1]),
                "commits": int(row[2]),
                "sessions": int(row[3]),
            }
    return found


def _requests(urls: Mapping[str, str]) -> dict[str, float]:
    token = os.environ.get("CHOREO_OPS_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    served: dict[str, float] = {}
    with httpx.Client(headers=headers, timeout=5, trust_env=False) as client:
        for service, url in urls.items():
            try:
                response = client.get(f"{url}/metrics")
            except httpx.HTTPError:
                continue
            if response.status_code != 200:
                continue
            total = 0.0
            for family in text_string_to_metric_families(response.text):
                if family.name != "http_requests":
                    continue
                for sample in family.samples:
                    if (
                        sample.name.endswith("_total")
                        and sample.labels.get("route") not in _OPERATIONS
                    ):
                        total += sample.value
            served[service] = total
    return served


def _emails(sendgrid_host: str) -> int | None:
    try:
        response = httpx.get(f"{sendgrid_host}/messages", timeout=10, trust_env=False)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    messages = response.json()
    return len(messages) if isinstance(messages, list) else None
