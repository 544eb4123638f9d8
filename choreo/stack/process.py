"""One child process of the stack: spawned in its own process group, its output forwarded line
by line, probed until ready, and stopped so that nothing it started is left behind."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from choreo.stack.errors import PartExitedError, ReadinessTimeoutError, StackError

OutputSink = Callable[[str, str], None]
"""Receives each line a part prints: `(part name, line)`."""

Probe = Callable[[], bool]
"""True once the part serves requests; must answer within about a second."""

_logger = logging.getLogger("choreo.stack")
_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1


def log_output(part: str, line: str) -> None:
    """The default sink: each line goes to the `choreo.stack.<part>` logger."""
    _logger.getChild(part).info("%s", line)


@dataclass(frozen=True)
class ProcessSpec:
    """How to run one part: its command, how to tell it is ready, how to stop it."""

    name: str
    command: Sequence[str]
    ready: Probe
    port: int | None = None
    """A loopback TCP port the part listens on: it must be free before the part starts."""
    environment: Mapping[str, str] | None = None
    """The child's whole environment; None inherits this process's."""
    user: str | None = None
    prepare: Callable[[], None] | None = None
    """Runs before every spawn (e.g. initdb)."""
    after_ready: Callable[[], None] | None = None
    """Runs each time the part becomes ready (e.g. create databases or topics)."""
    after_exit: Callable[[], None] | None = None
    """Runs each time the part's processes are gone (e.g. remove files it leaves behind)."""
    stop_signal: signal.Signals = signal.SIGTERM
    stop_grace: float = 10.0
    restart: bool = False
    """Restart the part when it exits or stops answering its probe (`Supervisor.watch`)."""
    alive: Probe | None = None
    """Once ready, the probe that decides a restart (default: `ready`). A liveness probe in
    Kubernetes' sense: a service's readiness also checks its database and broker, and under
    load it may answer late; killing it for that drops the work in flight and makes an
    overload worse (seen with `choreo bench`)."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on host:port now (SO_REUSEADDR, as servers bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent(stop_signal: signal.Signals) -> Callable[[], None] | None:
    """Have Linux signal the child if this process dies without stopping it (even by SIGKILL).

    The kernel ties the parent-death signal to the *thread* that spawned the child, so it is
    only requested from the main thread, which lives as long as the process.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def request() -> None:
        prctl(_PR_SET_PDEATHSIG, int(stop_signal), 0, 0, 0)

    return request


def _group_alive(pgid: int) -> bool:
    """Does a live (not zombie) process remain in process group `pgid`?"""
    proc = Path("/proc")
    if not proc.is_dir():  # no procfs: zombies count as alive, at worst a longer wait
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _parent, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state not in ("Z", "X"):
            return True
    return False


def _run_hook(part: str, what: str, hook: Callable[[], None]) -> None:
    try:
        hook()
    except StackError:
        raise
    except Exception as error:
        raise StackError(f"cannot {what} {part}: {error}") from error


class ChildProcess:
    """A running part. Not thread-safe: one thread drives it."""

    def __init__(self, spec: ProcessSpec, output: OutputSink = log_output) -> None:
        self.spec = spec
        self._output = output
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._tail: deque[str] = deque(maxlen=_TAIL_LINES)
        self._stop_requested_at: float | None = None
        self._reaped = False
        """Its process group is gone: killing it again could hit a group that reuses its id."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def tail(self) -> list[str]:
        """The last lines the part printed."""
        return list(self._tail)

    def start(self, timeout: float) -> None:
        """Spawn the part, wait until it is ready, and run its after-ready step.

        Raises PartExitedError when it exits first, ReadinessTimeoutError after `timeout`.
        """
        self.spawn()
        deadline = time.monotonic() + timeout
        while not self.answers():
            returncode = self.poll()
            if returncode is not None:
                self._join_reader()
                raise PartExitedError(self.name, returncode, self.tail())
            if time.monotonic() > deadline:
                raise ReadinessTimeoutError([self.name], timeout)
            time.sleep(0.1)
        self.set_up()

    def spawn(self) -> None:
        if self.running():
            raise StackError(f"{self.name} is already running")
        port = self.spec.port
        if port is not None and not port_is_free(port):
            raise StackError(
                f"port {port} for {self.name} is in use: is another `choreo up` running? "
                f"Choose another port with --port {self.name}=PORT"
            )
        if self.spec.prepare is not None:
            _run_hook(self.name, "prepare", self.spec.prepare)
        self._tail.clear()
        self._stop_requested_at = None
        self._reaped = False
        try:
            self._process = subprocess.Popen(
                list(self.spec.command),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=dict(self.spec.environment) if self.spec.environment is not None else None,
                user=self.spec.user,
                process_group=0,
                preexec_fn=_die_with_parent(self.spec.stop_signal),
            )
        except OSError as error:
            raise StackError(f"cannot start {self.name}: {error}") from error
        assert self._process.stdout is not None
        self._reader = threading.Thread(
            target=self._forward_output,
            args=(self._process.stdout,),
            name=f"output-{self.name}",
            daemon=True,
        )
        self._reader.start()

    def _forward_output(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip()
            self._tail.append(line)
            self._output(self.name, line)

    def poll(self) -> int | None:
        """The exit code once the process has exited, else None."""
        return self._process.poll() if self._process else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def answers(self, *, alive: bool = False) -> bool:
        """Probe the part once (its liveness probe with `alive`, when it has one). Touches
        nothing of this object, so any thread may call it."""
        probe = (self.spec.alive if alive else None) or self.spec.ready
        try:
            return probe()
        except Exception as error:  # a probe that errors just means "not now"
            _logger.debug("probe of %s: %s", self.name, error)
            return False

    def set_up(self) -> None:
        """Run the part's after-ready step (call it each time the part has become ready); raises
        StackError when it fails. Like `answers()`, safe from any thread."""
        if self.spec.after_ready is not None:
            _run_hook(self.name, "set up", self.spec.after_ready)

    def send_signal(self, signum: signal.Signals) -> None:
        """Signal the part's main process (chaos tests kill parts this way)."""
        if self.running():
            assert self._process is not None
            self._process.send_signal(signum)

    def request_stop(self) -> None:
        """Send the part its stop signal (once); `stop()` then waits for it."""
        process = self._process
        if process is None or process.poll() is not None or self._stop_requested_at is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(self.spec.stop_signal)
        self._stop_requested_at = time.monotonic()

    def stop_overdue(self) -> bool:
        """True once the stop signal has had its grace period and the part still runs."""
        requested_at = self._stop_requested_at
        return (
            requested_at is not None
            and self.running()
            and time.monotonic() > requested_at + self.spec.stop_grace
        )

    def stop(self, force: threading.Event | None = None) -> None:
        """Stop the part: its stop signal, then SIGKILL to its whole process group once the
        grace period has passed (at once when `force` is set)."""
        process = self._process
        if process is None:
            return
        self.request_stop()
        if self._stop_requested_at is not None:
            deadline = self._stop_requested_at + self.spec.stop_grace
            pause = force.wait if force is not None else time.sleep
            while process.poll() is None and time.monotonic() < deadline:
                if pause(0.05):
                    break
        self.reap()

    def reap(self) -> None:
        """SIGKILL whatever is left of the part (its main process, or what it started), wait
        until it is gone, and collect its exit status and output."""
        process = self._process
        if process is None or self._reaped:
            return
        gone = self._kill_group(process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        self._join_reader()
        self._stop_requested_at = None
        self._reaped = gone and process.poll() is not None
        if self._reaped and self.spec.after_exit is not None:
            _run_hook(self.name, "after_exit", self.spec.after_exit)

    def _kill_group(self, pgid: int) -> bool:
        """SIGKILL whatever is left in the part's process group (the group outlives its leader
        while any member lives), and wait until it is gone: kill() returns before that. False
        when some of it is still there after 5 s."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _group_alive(pgid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)
