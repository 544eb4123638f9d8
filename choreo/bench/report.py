"""How a run is shown: progress lines while it runs (a live status line on a terminal), the
figures as tables at the end, and a PNG of latency, throughput and CPU per saga."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.status import Status
from rich.table import Table

_QUIET_TICK_SECONDS = 10.0


class Reporter:
    """Progress on stderr: `say` prints a line; `tick` updates one status line on a terminal
    (every 10 s as a line elsewhere); `done` ends the status line."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._status: Status | None = None
        self._last_line = 0.0
        self._started = time.monotonic()

    def say(self, message: str) -> None:
        elapsed = time.monotonic() - self._started
        self.console.print(f"[dim]{elapsed:6.1f} s[/dim]  {message}", highlight=False)

    def tick(self, message: str) -> None:
        if self.console.is_terminal:
            if self._status is None:
                self._status = self.console.status(message)
                self._status.start()
            else:
                self._status.update(message)
        elif time.monotonic() - self._last_line >= _QUIET_TICK_SECONDS:
            self._last_line = time.monotonic()
            self.say(message)

    def done(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        self._last_line = 0.0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


_KINDS = {
    "good": "confirmed (good card)",
    "declined": "cancelled PAYMENT_FAILED (declined card)",
    "out_of_stock": "cancelled OUT_OF_STOCK",
}
"""What each kind of order ending as expected means, by `sagas.by_kind`'s keys."""


def tables(result: Mapping[str, Any]) -> list[Table]:
    """The figures for people."""
    shown: list[Table] = []
    sagas = result["sagas"]
    summary = Table(title=f"choreo bench: {result['run']['load']}", title_justify="left")
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    summary.add_row(
        "sustained sagas/s (ended as expected in the window)", _rate(sagas["sagas_per_s"])
    )
    summary.add_row("orders due in the window, per s", _rate(sagas["offered_per_s"]))
    summary.add_row("orders placed (warm-up included)", str(sagas["placed"]))
    summary.add_row("  ended as expected", str(sagas["ok"]))
    for kind, said in _KINDS.items():
        ended = sagas["by_kind"].get(kind, {}).get("ok", 0)
        placed = sum(sagas["by_kind"].get(kind, {}).values())
        if placed and len(sagas["by_kind"]) > 1:
            summary.add_row(f"    {said}", f"{ended} of {placed}")
    summary.add_row("  failed", str(sagas["failed"]))
    summary.add_row("  lost (no outcome in time)", str(sagas["lost"]))
    for failure, count in sagas["failures"].items():
        summary.add_row(f"    {failure}", str(count))
    for label, key in (
        ("POST → outcome on order.event", "latency_ms"),
        ("POST /orders", "post_latency_ms"),
    ):
        figures = sagas[key]
        summary.add_row(
            f"{label} ms p50 / p95 / p99 / max",
            " / ".join(_ms(figures[p]) for p in ("p50", "p95", "p99", "max")),
        )
    cpu = result.get("cpu")
    if cpu:
        idle_others = result.get("idle", {}).get("other_processes_cores")
        summary.add_row(
            "other processes on this machine, cores (load / idle)",
            f"{cpu['other_processes_cores']:.2f} / "
            + ("-" if idle_others is None else f"{idle_others:.2f}"),
        )

    def restarted(counts: Mapping[str, int]) -> str:
        return ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"

    summary.add_row(
        "parts the supervisor restarted: by the load's end / by the run's",
        f"{restarted(result.get('restarts_during_load') or {})} / "
        f"{restarted(result.get('restarts') or {})}",
    )
    shown.append(summary)

    if cpu:
        table = Table(
            title="CPU per saga (from /proc: each process and its children)", title_justify="left"
        )
        table.add_column("process")
        table.add_column("ms per saga", justify="right")
        table.add_column("cores under load", justify="right")
        table.add_column("cores idle", justify="right")
        idle = result.get("idle", {}).get("cores", {})
        per_saga = cpu["ms_per_saga"]
        for name in sorted(per_saga, key=lambda n: -per_saga[n]):
            table.add_row(
                name,
                f"{per_saga[name]:.1f}",
                f"{cpu['cores_busy'].get(name, 0):.2f}",
                "-" if name not in idle else f"{idle[name]:.3f}",
            )
        for name in cpu["not_measured"]:
            table.add_row(name, "restarted", "", "")
        table.add_row(
            "services + broker + PostgreSQL", f"{cpu['services_broker_postgres_ms']:.1f}", "", ""
        )
        table.add_row("emulators", f"{cpu['emulators_ms']:.1f}", "", "")
        if "total_cores" in result.get("idle", {}):
            table.add_row("the stack idle", "", "", f"{result['idle']['total_cores']:.3f}")
        shown.append(table)

    costs = result.get("costs_per_saga")
    ceiling = result.get("ceiling")
    if ceiling:
        table = Table(title="Ceiling (same machine, same run)", title_justify="left")
        table.add_column("primitive")
        table.add_column("rate/s", justify="right")
        table.add_column("per saga", justify="right")
        steps = ceiling.get("step_commits_per_s", {})
        for clients, rate in steps.items():
            table.add_row(f"saga-step transactions, {clients} client(s)", _rate(rate), "")
        if costs:
            table.add_row(
                "  step transactions per saga (inbox rows + the POST)",
                "",
                f"{costs['step_transactions']:.1f}",
            )
            table.add_row(
                "  all commits per saga (reads, relay marks, probes too)",
                "",
                f"{costs['commits']:.1f}",
            )
            table.add_row(
                "  database sessions opened per saga (pools that churn)",
                "",
                f"{costs.get('sessions', 0.0):.2f}",
            )
        table.add_row(
            "broker records produced + consumed",
            _rate(ceiling.get("broker_records_per_s")),
            "" if not costs else f"{costs['outbox_rows']:.1f}",
        )
        http = costs["http_requests"] if costs else None
        table.add_row(
            "bare FastAPI requests",
            _rate(ceiling.get("http_requests_per_s")),
            "" if not http else f"{http['total']:.1f}",
        )
        r_star = ceiling.get("r_star_sagas_per_s")
        table.add_row("R* (sagas/s the primitives allow)", _rate(r_star), "")
        eta = ceiling.get("eta")
        table.add_row("η = sagas/s ÷ R*", "-" if eta is None else f"{eta:.3f}", "")
        if result["run"]["mode"] == "open-loop":
            table.add_row("  (open-loop: η is of the rate offered, not of the capacity)", "", "")
        shown.append(table)

    baseline = result.get("baseline")
    if baseline:
        table = Table(title="Synchronous baseline (no broker, no outbox)", title_justify="left")
        table.add_column("figure")
        table.add_column("value", justify="right")
        table.add_row(
            f"orders/s, closed-loop at {baseline['concurrency']}", _rate(baseline["orders_per_s"])
        )
        latency = baseline["latency_ms"]
        table.add_row("latency ms p50 / p99", f"{_ms(latency['p50'])} / {_ms(latency['p99'])}")
        ratio = baseline.get("ratio")
        table.add_row(
            "Choreo sagas/s ÷ baseline orders/s", "-" if ratio is None else f"{ratio:.3f}"
        )
        if baseline.get("note"):
            table.caption = baseline["note"]
            table.caption_justify = "left"
        shown.append(table)
    return shown


def png(result: Mapping[str, Any], path: Path) -> None:
    """Throughput and latency percentiles over time, latency summary, CPU per saga by process."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(14, 9))
    figure.suptitle(f"choreo bench: {result['run']['load']}")
    series = result["series"]
    seconds = series["second"]
    warmup = result["run"]["warmup_s"]
    measured_end = warmup + result["run"]["duration_s"]

    throughput = axes[0][0]
    throughput.plot(seconds, series["due_per_s"], label="orders due", color="grey", linewidth=1)
    ended = [value or 0.0 for value in series["ended_per_s"]]
    throughput.plot(seconds, ended, label="sagas ended", color="tab:blue", alpha=0.35)
    smoothed = [
        sum(ended[max(0, i - 4) : i + 1]) / len(ended[max(0, i - 4) : i + 1])
        for i in range(len(ended))
    ]
    throughput.plot(seconds, smoothed, label="sagas ended, 5 s mean", color="tab:blue")
    throughput.axvspan(0, warmup, color="grey", alpha=0.15, label="warm-up")
    throughput.axvline(measured_end, color="black", linewidth=0.8, linestyle="--")
    throughput.set_title("throughput (per second)")
    throughput.set_xlabel("s since the load started")
    throughput.legend()

    latency = axes[0][1]
    lines = (
        ("p50_ms", "tab:green", "-"),
        ("p95_ms", "tab:orange", "--"),
        ("p99_ms", "tab:red", ":"),
    )
    for key, colour, style in lines:
        points = [(s, v) for s, v in zip(seconds, series[key], strict=True) if v is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            latency.plot(xs, ys, label=key.removesuffix("_ms"), color=colour, linestyle=style)
    latency.axvspan(0, warmup, color="grey", alpha=0.15)
    latency.set_yscale("log")
    latency.set_title("POST → outcome latency by second due (ms)")
    latency.set_xlabel("s since the load started")
    latency.legend()

    summary = axes[1][0]
    labels = ["p50", "p95", "p99", "max"]
    saga = [result["sagas"]["latency_ms"][p] or 0 for p in labels]
    post = [result["sagas"]["post_latency_ms"][p] or 0 for p in labels]
    positions = range(len(labels))
    summary.bar([p - 0.2 for p in positions], saga, width=0.4, label="POST → outcome")
    summary.bar([p + 0.2 for p in positions], post, width=0.4, label="POST /orders")
    summary.set_xticks(list(positions), labels)
    summary.set_yscale("log")
    summary.set_title("latency percentiles, measured window (ms)")
    summary.legend()

    cpu_axis = axes[1][1]
    per_saga = result.get("cpu", {}).get("ms_per_saga", {})
    names = sorted(per_saga, key=lambda n: per_saga[n])
    colours = ["lightgrey" if n == "bench" else "tab:purple" for n in names]
    cpu_axis.barh(names, [per_saga[n] for n in names], color=colours)
    cpu_axis.set_title("CPU per saga by process (ms; bench = the load's own client)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
