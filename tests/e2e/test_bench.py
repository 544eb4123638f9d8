"""`choreo bench` as a user runs it: a short, slow run on a stack of its own, whose figures are
all there, non-zero where work was done, and with no saga lost at that rate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from choreo.bench.figures import SERVICES
from choreo.testing import repository_root

from .conftest import _environment

pytestmark = pytest.mark.slow


def _bench(tmp_path: Path, *options: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    figures = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from choreo.cli import main; main()",
            "bench",
            f"--json={figures}",
            *options,
        ],
        cwd=repository_root(),
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done, json.loads(figures.read_text())


def test_a_short_run_reports_every_figure_and_loses_no_saga(tmp_path: Path) -> None:
    chart = tmp_path / "bench.png"
    done, figures = _bench(
        tmp_path,
        "--rate=3",
        "--warmup=1",
        "--duration=5",
        "--declined-share=0.2",
        "--out-of-stock-share=0.2",
        "--customers=3",
        "--products=2",
        "--idle-seconds=2",
        "--ceiling-seconds=1",
        "--ceiling-clients=2",
        "--baseline-seconds=2",
        "--baseline-concurrency=2",
        f"--png={chart}",
    )
    sagas = figures["sagas"]
    assert sagas["placed"] == 18
    # A declined card and a product out of stock end cancelled, as they should: no failure.
    assert sagas["ok"] == sagas["placed"], sagas["failures"]
    assert sagas["lost"] == 0
    assert sagas["failed"] == 0
    assert set(sagas["by_kind"]) == {"good", "declined", "out_of_stock"}
    assert sagas["sagas_per_s"] > 0
    assert sagas["latency_ms"]["count"] > 0
    assert 0 < sagas["latency_ms"]["p50"] <= sagas["latency_ms"]["max"]
    assert 0 < sagas["post_latency_ms"]["p50"] <= sagas["post_latency_ms"]["max"]

    cpu = figures["cpu"]
    for part in (*SERVICES, "postgres", "broker", "stripe", "sendgrid", "bench"):
        assert part in cpu["ms_per_saga"], part
    for part in ("order", "inventory", "payment", "notification", "postgres", "broker"):
        assert cpu["ms_per_saga"][part] > 0, part
    assert cpu["services_broker_postgres_ms"] > 0
    assert figures["settle"]["settled"] is True  # a fresh stack is quiet after its set-up
    assert figures["idle"]["total_cores"] > 0

    costs = figures["costs_per_saga"]
    assert costs["outbox_rows"] > 0
    assert costs["inbox_rows"] > 0
    assert costs["http_requests"]["services"] > 0
    assert costs["http_requests"]["emails"] > 0

    ceiling = figures["ceiling"]
    assert set(ceiling["step_commits_per_s"]) == {"1", "2"}
    assert all(rate > 0 for rate in ceiling["step_commits_per_s"].values())
    assert ceiling["broker_records_per_s"] > 0
    assert ceiling["http_requests_per_s"] > 0
    assert ceiling["r_star_sagas_per_s"] > 0
    assert ceiling["eta"] > 0

    baseline = figures["baseline"]
    assert baseline["orders"] > 0
    assert baseline["refused"] == 0
    assert baseline["ratio"] > 0

    assert figures["restarts"] == {}
    assert chart.stat().st_size > 0
    assert "sustained sagas/s" in done.stdout  # the table for people


def test_bad_options_are_one_line(tmp_path: Path) -> None:
    for options, expected in (
        (["--rate=2", "--concurrency=4"], "exclude each other"),
        (["--rate=abc"], "--rate"),
        (["--declined-share=0.8", "--out-of-stock-share=0.5"], "more than 1"),
    ):
        done = subprocess.run(
            [sys.executable, "-c", "from choreo.cli import main; main()", "bench", *options],
            cwd=repository_root(),
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("error: ")
        assert expected in done.stderr
