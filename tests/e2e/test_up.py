"""`choreo up` as a user sees it: every service ready within a minute, the URLs printed, crashed
or hung parts brought back, and nothing left running after Ctrl-C."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from choreo.stack.config import SERVICES
from choreo.stack.process import port_is_free

from .conftest import UP_BANNER, ChoreoUp, left_running, start_choreo_up, stop_choreo_up

pytestmark = pytest.mark.slow


def _part_process(running: ChoreoUp, command: str) -> psutil.Process:
    """The part whose command line contains `command` (a service's module, a program)."""
    for child in psutil.Process(running.process.pid).children():
        if command in " ".join(child.cmdline()):
            return child
    raise AssertionError(f"no process runs {command}")


def test_choreo_up_starts_everything_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    running = start_choreo_up(tmp_path / "choreo")
    try:
        services = [service.name for service in SERVICES]
        running.wait_until_ready(services, timeout=60)
        running.wait_for_line(UP_BANNER, timeout=10)
        output = running.output()
        for service in services:
            assert running.url(service) in output
        assert f"127.0.0.1:{running.ports.postgres}" in output
        assert running.bootstrap_servers in output
        assert running.url("stripe") in output
        assert f"{running.url('sendgrid')}/messages" in output
        assert "order        | " in output  # each part's lines carry its name
        # Piped, the services log JSON lines (--log-format auto); a normal start has no traceback.
        order_lines = [line for line in running.lines if line.startswith("order        | ")]
        assert all(line.removeprefix("order        | ").startswith("{") for line in order_lines)
        assert "Traceback" not in output

        family = psutil.Process(running.process.pid).children(recursive=True)
        assert len(family) >= 10  # four parts, six services, PostgreSQL's own processes

        assert running.interrupt() == 0
    finally:
        stop_choreo_up(running)
    assert "stopped" in running.output()
    # A restart keeps the databases; the in-memory broker's records are gone, and it says so.
    said = " ".join(running.output().split())
    assert "gone: every topic, dead letter and committed offset" in said
    left = left_running(family)
    assert left == [], f"left running: {[p.cmdline() for p in left]}"
    assert all(port_is_free(running.ports.of(name)) for name in running.ports.names())


def test_parts_that_crash_or_hang_are_restarted_each_on_its_own(tmp_path: Path) -> None:
    """The gateway and the user service killed together are back in well under the minute the
    gateway once waited for a user service nobody restarted; PostgreSQL stuck in a "smart"
    shutdown (SIGTERM, which waits for every pooled connection) is restarted, and every service
    serves again. Asked for the short form, the services keep it, restarted or not."""
    running = start_choreo_up(tmp_path / "choreo", "--log-format", "text")
    try:
        running.wait_for_line(UP_BANNER, timeout=90)
        killed = [_part_process(running, f"{name}_service.main") for name in ("gateway", "user")]
        for process in killed:
            process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        running.wait_for_line("gateway restarted", timeout=90)
        running.wait_for_line("user restarted", timeout=90)
        running.wait_until_ready(["gateway", "user"], timeout=10)
        back = time.monotonic() - killed_at
        assert _part_process(running, "gateway_service.main").pid != killed[0].pid
        assert _part_process(running, "user_service.main").pid != killed[1].pid

        _part_process(running, "bin/postgres").send_signal(signal.SIGTERM)
        running.wait_for_line("postgres restarted", timeout=60)
        running.wait_until_ready([service.name for service in SERVICES], timeout=60)
    finally:
        stop_choreo_up(running)
    assert running.process.returncode == 0
    # One restart takes 4-17 s here; the gateway alone once blocked the supervisor for 60 s.
    assert back < 55, f"the gateway and the user service were back only after {back:.0f} s"
    assert "postgres has not answered for 15 s" in running.output()
    summary = next(line for line in running.lines if line.startswith("restarts: "))
    restarts = dict(item.split(" ") for item in summary.removeprefix("restarts: ").split(", "))
    assert restarts["postgres"] == "1"
    assert int(restarts["gateway"]) >= 1
    assert int(restarts["user"]) >= 1
    gateway_lines = [line for line in running.lines if line.startswith("gateway      | ")]
    assert gateway_lines
    short = [line.removeprefix("gateway      | ") for line in gateway_lines]
    assert not any(line.startswith("{") or "\x1b" in line for line in short)  # no colour: piped
