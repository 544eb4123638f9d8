"""The supervisor's guarantees, with real processes: parts ready before `start()` returns, each
part's lines under its name, nothing left behind, and parts kept running on their own: restarted
when they exit or stop answering, in parallel, PostgreSQL included."""

from __future__ import annotations

import dataclasses
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import psycopg
import pytest

from choreo.stack.errors import PartExitedError, StackError
from choreo.stack.postgres import EmbeddedPostgres
from choreo.stack.process import OutputSink, ProcessSpec
from choreo.stack.supervisor import Supervisor
from choreo.testing import free_port

Lines = list[tuple[str, str]]


def _gone(pids: list[int]) -> bool:
    return not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        for pid in pids
    )


def _family(pid: int) -> list[int]:
    process = psutil.Process(pid)
    return [pid, *(child.pid for child in process.children(recursive=True))]


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `condition` held; fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"not {what} after {timeout:.0f} s"
        time.sleep(0.05)
    return time.monotonic() - started


@contextmanager
def _watching(supervisor: Supervisor) -> Iterator[None]:
    """`supervisor.watch()` in a thread for the block, as `choreo up` runs it."""
    done = threading.Event()
    watcher = threading.Thread(target=supervisor.watch, args=(done,), daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join(10)


def _into(lines: Lines) -> OutputSink:
    return lambda part, line: lines.append((part, line))


def _said(lines: Lines, start: str) -> bool:
    return any(part == "choreo" and line.startswith(start) for part, line in list(lines))


def _sleeper(name: str, *, restart: bool = False, ready: bool = True) -> ProcessSpec:
    """A part that prints, starts a grandchild, and sleeps: a stand-in for a server."""
    script = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "print('up', flush=True); time.sleep(600)"
    )
    return ProcessSpec(
        name=name,
        command=[sys.executable, "-c", script],
        ready=lambda: ready,
        restart=restart,
        stop_grace=2.0,
    )


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _server(name: str, port: int, startup: Path, *, upstream: int | None = None) -> ProcessSpec:
    """A part that takes the seconds written in `startup` to listen on `port`, and is ready only
    while `upstream` listens too (as the gateway needs the user service's keys)."""
    script = (
        "import pathlib, socket, sys, time; "
        "time.sleep(float(pathlib.Path(sys.argv[1]).read_text())); "
        "server = socket.create_server(('127.0.0.1', int(sys.argv[2]))); "
        "time.sleep(600)"
    )
    return ProcessSpec(
        name=name,
        command=[sys.executable, "-c", script, str(startup), str(port)],
        ready=lambda: _listens(port) and (upstream is None or _listens(upstream)),
        port=port,
        restart=True,
        stop_grace=2.0,
    )


def test_supervisor_prefixes_output_and_leaves_nothing_behind() -> None:
    lines: Lines = []
    supervisor = Supervisor(_into(lines))
    with supervisor:
        supervisor.start([_sleeper("first")], timeout=10)
        supervisor.start([_sleeper("second")], timeout=10)
        deadline = time.monotonic() + 10
        while len([line for line in lines if line[1] == "up"]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        family = [pid for child in supervisor.children for pid in _family(child.pid or 0)]
        assert len(family) == 4
    assert _gone(family)
    assert ("first", "up") in lines
    assert ("second", "up") in lines
    assert ("choreo", "stopping second") in lines
    assert lines.index(("choreo", "stopping second")) < lines.index(("choreo", "stopping first"))


def test_supervisor_reports_a_part_that_dies_before_it_is_ready() -> None:
    failing = ProcessSpec(
        name="failing",
        command=[sys.executable, "-c", "print('no config'); raise SystemExit(3)"],
        ready=lambda: False,
    )
    with Supervisor(lambda part, line: None) as supervisor, pytest.raises(PartExitedError) as error:
        supervisor.start([failing], timeout=10)
    assert error.value.returncode == 3
    assert "no config" in str(error.value)


def test_supervisor_times_out_on_a_part_that_never_gets_ready() -> None:
    with Supervisor(lambda part, line: None) as supervisor, pytest.raises(StackError) as error:
        supervisor.start([_sleeper("stuck", ready=False)], timeout=0.5)
    assert "stuck" in str(error.value)


def test_supervisor_restarts_a_part_that_crashes() -> None:
    lines: Lines = []
    with Supervisor(_into(lines)) as supervisor:
        supervisor.start([_sleeper("crashy", restart=True)], timeout=10)
        first_family = _family(supervisor.child("crashy").pid or 0)
        with _watching(supervisor):
            supervisor.kill("crashy", signal.SIGKILL)
            _wait_for(lambda: _said(lines, "crashy restarted"), 15, "restarted")
        assert supervisor.child("crashy").running()
        assert supervisor.child("crashy").pid not in first_family
        assert _gone(first_family)  # the crashed part's own child went with it
        assert supervisor.restart_counts() == {"crashy": 1}
    assert ("choreo", "crashy exited with code -9; restarting in 1 s") in lines


def test_a_ready_part_is_restarted_by_its_liveness_not_its_readiness() -> None:
    """A service slowed by load answers its readiness late (it checks the database and the
    broker); with a liveness probe it is restarted only when that stops answering too."""
    lines: Lines = []
    ready, alive = threading.Event(), threading.Event()
    ready.set()
    alive.set()
    part = dataclasses.replace(
        _sleeper("busy", restart=True), ready=ready.is_set, alive=alive.is_set
    )
    with Supervisor(_into(lines), unready_grace=3) as supervisor:
        supervisor.start([part], timeout=10)
        first = supervisor.child("busy").pid
        with _watching(supervisor):
            ready.clear()  # not ready, still alive: left alone
            time.sleep(8)
            assert supervisor.child("busy").pid == first, lines
            assert supervisor.restart_counts() == {"busy": 0}
            alive.clear()  # no longer alive either: restarted (and ready again once it is)
            _wait_for(lambda: _said(lines, "busy has not answered"), 15, "found silent")
            ready.set()
            alive.set()
            _wait_for(lambda: _said(lines, "busy restarted"), 15, "restarted")
        assert supervisor.child("busy").pid != first


def test_parts_killed_together_are_back_within_one_restart_not_two(tmp_path: Path) -> None:
    """The gateway and the user service killed at once: the gateway cannot be ready before the
    user service is, and waiting for it must not hold back the user service's own restart."""
    startup = tmp_path / "startup-seconds"
    startup.write_text("0")
    user_port, gateway_port = free_port(), free_port()
    user = _server("user", user_port, startup)
    gateway = _server("gateway", gateway_port, startup, upstream=user_port)
    lines: Lines = []
    with Supervisor(_into(lines), restart_timeout=30) as supervisor:
        supervisor.start([gateway, user], timeout=20)
        startup.write_text("4")  # one restart: the first delay (1 s), then 4 s to listen
        with _watching(supervisor):
            supervisor.kill("gateway")
            supervisor.kill("user")
            back = _wait_for(
                lambda: _said(lines, "gateway restarted") and _said(lines, "user restarted"),
                30,
                "both restarted",
            )
        assert _listens(gateway_port)
        assert _listens(user_port)
        assert supervisor.restart_counts() == {"gateway": 1, "user": 1}
    assert back < 9, f"back after {back:.1f} s: about two restarts (10 s) rather than one (5 s)"


def _client(name: str, port: int, database: int) -> ProcessSpec:
    """A service that exits at once without its database, and as soon as the database goes."""
    script = (
        "import socket, sys; "
        "database = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); "
        "server = socket.create_server(('127.0.0.1', int(sys.argv[2]))); "
        "database.recv(1); sys.exit('the database went away')"
    )
    return ProcessSpec(
        name=name,
        command=[sys.executable, "-c", script, str(database), str(port)],
        ready=lambda: _listens(port),
        port=port,
        restart=True,
        stop_grace=2.0,
    )


def test_a_part_restarts_once_the_parts_started_before_it_serve_again(tmp_path: Path) -> None:
    """A service that exits because its database died is not restarted into a crash loop
    while the database is down: it waits for it, then restarts once."""
    startup = tmp_path / "startup-seconds"
    startup.write_text("0")
    database_port, service_port = free_port(), free_port()
    lines: Lines = []
    with Supervisor(_into(lines)) as supervisor:
        supervisor.start([_server("database", database_port, startup)], timeout=20)
        supervisor.start([_client("service", service_port, database_port)], timeout=20)
        startup.write_text("3")
        with _watching(supervisor):
            supervisor.kill("database")
            _wait_for(lambda: _said(lines, "service restarted"), 30, "restarted")
        assert _listens(service_port)
        assert supervisor.restart_counts() == {"database": 1, "service": 1}
    assert _said(lines, "service waits for database before it restarts")


def test_postgres_stuck_in_a_smart_shutdown_or_killed_is_restarted() -> None:
    """SIGTERM makes PostgreSQL refuse new connections until every open one closes, which a
    pool never does; the supervisor notices that it stopped answering and restarts it."""
    with tempfile.TemporaryDirectory(prefix="choreo-test-pg-") as scratch:
        postgres = EmbeddedPostgres(Path(scratch) / "pg", free_port())
        lines: Lines = []
        with Supervisor(_into(lines), unready_grace=3) as watched:
            watched.start([dataclasses.replace(postgres.spec, restart=True)], timeout=60)
            pooled = psycopg.connect(postgres.url("postgres"), autocommit=True)
            try:
                with _watching(watched):
                    watched.kill("postgres", signal.SIGTERM)
                    _wait_for(lambda: not postgres.accepts_connections(), 10, "refusing")
                    back = _wait_for(postgres.accepts_connections, 30, "answering again")
                    assert watched.restart_counts() == {"postgres": 1}
                    with pytest.raises(psycopg.OperationalError):
                        pooled.execute("SELECT 1")  # ended by the fast shutdown

                    killed = watched.child("postgres").pid
                    watched.kill("postgres", signal.SIGKILL)
                    _wait_for(lambda: watched.child("postgres").pid != killed, 10, "respawned")
                    back_from_kill = _wait_for(postgres.accepts_connections, 30, "answering")
                    assert watched.restart_counts() == {"postgres": 2}
            finally:
                pooled.close()
    assert _said(lines, "postgres has not answered for 3 s; restarting")
    assert _said(lines, "postgres exited with code -9; restarting")
    # 3 s of grace, the fast shutdown, 1 s of delay, the start: well under 20 s.
    assert back < 20, f"answering again only {back:.1f} s after SIGTERM"
    assert back_from_kill < 20, f"answering again only {back_from_kill:.1f} s after SIGKILL"
