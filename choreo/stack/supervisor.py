"""The supervisor: starts parts and waits until they are ready, keeps each one running on its
own (restarted when it exits or stops answering), and stops everything in reverse order of start
so that nothing is left behind."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from types import FrameType, TracebackType
from typing import Any

from choreo.stack.errors import PartExitedError, ReadinessTimeoutError, StackError
from choreo.stack.process import ChildProcess, OutputSink, ProcessSpec, log_output

SUPERVISOR_NAME = "choreo"
"""The name the supervisor's own messages carry in the output."""

Progress = Callable[[Sequence[str]], None]
"""Told the names of the parts still starting, each time that list changes."""

_FIRST_RESTART_DELAY = 1.0
_MAX_RESTART_DELAY = 30.0
_STABLE_AFTER = 10.0
"""A part ready this long before it fails is restarted after the first delay again: only a part
that keeps failing soon after its start (a crash loop) waits longer and longer."""
_STARTING_PROBE_INTERVAL = 0.1
_READY_PROBE_INTERVAL = 2.0
_MAX_PROBES = 16
"""Probes run in threads, so that a part that hangs delays no other part's probe."""


class _Phase(Enum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    DOWN = "down"
    """Stopped or exited, and reaped: due to restart at `restart_at`."""


@dataclass(eq=False)
class _Tended:
    """What the supervisor knows of one part."""

    child: ChildProcess
    group: int
    """The `start()` call that started it: the parts of earlier calls are its dependencies."""
    phase: _Phase
    phase_since: float
    answered_at: float = 0.0
    """When its probe last answered."""
    answering_since: float | None = None
    """Since when every probe answered; None while it does not."""
    probe: Future[bool] | None = None
    probe_due: float = 0.0
    restart_at: float = 0.0
    backoff: float = _FIRST_RESTART_DELAY
    out_since: float | None = None
    """Since when it has been out of service; None while it serves."""
    waiting_for: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return self.child.name

    @property
    def serving(self) -> bool:
        return self.phase is _Phase.READY and self.answering_since is not None

    def enter(self, phase: _Phase, now: float) -> None:
        self.phase = phase
        self.phase_since = now
        self.probe = None  # a probe still running answers for the previous phase: ignored
        self.probe_due = now
        if phase is not _Phase.READY:
            self.answering_since = None


class Supervisor:
    """Runs the stack's parts as child processes. Driven from one thread (normally the main
    thread, which lets Ctrl-C during a stop kill the remaining parts at once, and is the thread
    whose death Linux tells the parts about)."""

    def __init__(
        self,
        output: OutputSink = log_output,
        *,
        restart_timeout: float = 60.0,
        unready_grace: float = 15.0,
    ) -> None:
        self._output = output
        self._restart_timeout = restart_timeout
        self._unready_grace = unready_grace
        self._parts: dict[str, _Tended] = {}
        """Every supervised part, in order of start."""
        self._groups = 0
        self._restarts: dict[str, int] = {}
        self._force = threading.Event()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def children(self) -> tuple[ChildProcess, ...]:
        return tuple(part.child for part in self._parts.values())

    def child(self, name: str) -> ChildProcess:
        return self._parts[name].child

    def restart_counts(self) -> Mapping[str, int]:
        """How many times each part started so far was restarted (kept after `stop()`); safe
        to read from any thread."""
        return dict(self._restarts)

    def kill(self, name: str, signum: signal.Signals = signal.SIGKILL) -> None:
        """Signal one part's main process, as a crash would (for chaos tests)."""
        self.child(name).send_signal(signum)

    def start(
        self, specs: Sequence[ProcessSpec], *, timeout: float, progress: Progress | None = None
    ) -> None:
        """Spawn every part of `specs`, then wait until all of them are ready, in parallel."""
        started_at = time.monotonic()
        group: list[_Tended] = []
        for spec in specs:
            if spec.name in self._parts:
                raise StackError(f"{spec.name} is already supervised")
            child = ChildProcess(spec, self._output)
            part = _Tended(child, self._groups, _Phase.STARTING, started_at)
            self._parts[spec.name] = part
            self._restarts[spec.name] = 0
            child.spawn()
            group.append(part)
        self._groups += 1
        pending = list(group)
        if progress is not None:
            progress([part.name for part in pending])
        probes = ThreadPoolExecutor(_MAX_PROBES, thread_name_prefix="probe")
        try:
            while pending:
                now = time.monotonic()
                for part in list(pending):
                    returncode = part.child.poll()
                    if returncode is not None:
                        part.child.reap()
                        raise PartExitedError(part.name, returncode, part.child.tail())
                    if self._probe(part, probes, now, _STARTING_PROBE_INTERVAL):
                        part.enter(_Phase.READY, now)
                        part.answered_at = part.answering_since = now
                        pending.remove(part)
                        self.say(f"{part.name} ready in {now - started_at:.1f} s")
                        if progress is not None:
                            progress([part.name for part in pending])
                if pending and now - started_at > timeout:
                    raise ReadinessTimeoutError([part.name for part in pending], timeout)
                time.sleep(0.05)
        finally:
            probes.shutdown(wait=False, cancel_futures=True)

    def watch(self, until: threading.Event | None = None, poll_interval: float = 0.2) -> None:
        """Block while the parts run, keeping each one running on its own.

        A part that exits, or whose probe has not answered for `unready_grace` seconds, is
        stopped (its stop signal, then SIGKILL) and started again after a delay that grows only
        while it keeps failing soon after its start; one that may not restart raises StackError
        (PartExitedError when it exited). The parts of earlier `start()` calls are the later
        ones' dependencies: while one of them is out of service, the later parts are neither
        restarted nor blamed for being unready. Returns when `until` is set.
        """
        watching_since = time.monotonic()
        for part in self._parts.values():
            # Unwatched so far (the stack seeding its demo catalog, say): silent since now.
            part.answered_at = max(part.answered_at, watching_since)
        probes = ThreadPoolExecutor(_MAX_PROBES, thread_name_prefix="probe")
        try:
            while until is None or not until.is_set():
                now = time.monotonic()
                for part in list(self._parts.values()):
                    self._tend(part, probes, now)
                if until is not None:
                    until.wait(poll_interval)
                else:
                    time.sleep(poll_interval)
        finally:
            probes.shutdown(wait=False, cancel_futures=True)

    def _tend(self, part: _Tended, probes: ThreadPoolExecutor, now: float) -> None:
        """Move one part along: never blocks on it for longer than a poll."""
        child = part.child
        if part.phase is _Phase.READY:
            returncode = child.poll()
            if returncode is not None:
                self._fail(part, now, f"exited with code {returncode}", returncode)
                return
            answered = self._probe(part, probes, now, _READY_PROBE_INTERVAL)
            if answered is True:
                part.answered_at = now
                part.answering_since = part.answering_since or now
            elif answered is False:
                part.answering_since = None
            dependencies = self._dependencies_serving_since(part)
            if dependencies is None:
                return  # not its fault
            last_answer = max(part.answered_at, dependencies)
            if now - last_answer > self._unready_grace:
                silent = f"has not answered for {self._unready_grace:.0f} s"
                self._fail(part, now, silent, out_since=last_answer)
        elif part.phase is _Phase.STARTING:
            returncode = child.poll()
            if returncode is not None:
                self._fail(part, now, f"exited with code {returncode}", returncode)
                return
            try:
                ready = self._probe(part, probes, now, _STARTING_PROBE_INTERVAL)
            except StackError as error:  # its after-ready step failed: tried again in a while
                self.say(str(error))
                part.probe_due = now + _READY_PROBE_INTERVAL
                ready = False
            if ready:
                self._recovered(part, now)
                return
            dependencies = self._dependencies_serving_since(part)
            if dependencies is None:
                return
            starting = now - max(part.phase_since, dependencies)
            if starting > self._restart_timeout:
                self._fail(part, now, f"was not ready after {starting:.0f} s")
        elif part.phase is _Phase.STOPPING:
            if child.running() and not child.stop_overdue():
                return
            child.reap()
            part.enter(_Phase.DOWN, now)
        elif part.phase is _Phase.DOWN and now >= part.restart_at:
            self._restart(part, now)

    def _probe(
        self, part: _Tended, probes: ThreadPoolExecutor, now: float, interval: float
    ) -> bool | None:
        """The answer of the part's last probe once it came (a starting part is also set up
        when it answers), else None; sends the next probe when it is due."""
        probe = part.probe
        if probe is None:
            if now >= part.probe_due:
                set_up = part.phase is _Phase.STARTING
                part.probe = probes.submit(_probe_once, part.child, set_up)
            return None
        if not probe.done():
            return None
        part.probe = None
        part.probe_due = now + interval
        return probe.result()

    def _dependencies_serving_since(self, part: _Tended) -> float | None:
        """Since when every part of the earlier `start()` calls has been answering its probe;
        None while one of them is out of service."""
        since = 0.0
        for other in self._dependencies(part):
            if other.answering_since is None or not other.serving:
                return None
            since = max(since, other.answering_since)
        return since

    def _dependencies(self, part: _Tended) -> list[_Tended]:
        return [other for other in self._parts.values() if other.group < part.group]

    def _fail(
        self,
        part: _Tended,
        now: float,
        what: str,
        returncode: int | None = None,
        *,
        out_since: float | None = None,
    ) -> None:
        """Take a part out of service: stop it, and plan its restart."""
        child = part.child
        if not child.spec.restart:
            if returncode is None:
                raise StackError(f"{part.name} {what}")
            child.reap()  # for its last output
            raise PartExitedError(part.name, returncode, child.tail())
        stable = part.phase is _Phase.READY and now - part.phase_since >= _STABLE_AFTER
        if stable or self._dependencies_serving_since(part) is None:
            part.backoff = _FIRST_RESTART_DELAY
        delay = part.backoff
        part.backoff = min(delay * 2, _MAX_RESTART_DELAY)
        part.restart_at = now + delay
        if part.out_since is None:
            part.out_since = now if out_since is None else out_since
        self.say(f"{part.name} {what}; restarting in {delay:.0f} s")
        child.request_stop()  # for PostgreSQL, a fast shutdown
        part.enter(_Phase.STOPPING, now)

    def _restart(self, part: _Tended, now: float) -> None:
        waiting_for = tuple(other.name for other in self._dependencies(part) if not other.serving)
        if waiting_for:
            if waiting_for != part.waiting_for:
                self.say(f"{part.name} waits for {', '.join(waiting_for)} before it restarts")
            part.waiting_for = waiting_for
            return
        part.waiting_for = ()
        self._restarts[part.name] += 1
        try:
            part.child.spawn()
        except StackError as error:
            self.say(f"{part.name} did not restart: {error}")
            part.restart_at = now + part.backoff
            part.backoff = min(part.backoff * 2, _MAX_RESTART_DELAY)
            return
        part.enter(_Phase.STARTING, now)

    def _recovered(self, part: _Tended, now: float) -> None:
        part.enter(_Phase.READY, now)
        part.answered_at = part.answering_since = now
        out_for = now - (part.out_since or now)
        part.out_since = None
        restarts = self._restarts[part.name]
        self.say(f"{part.name} restarted (restart {restarts}): out of service for {out_for:.1f} s")

    def stop(self) -> None:
        """Stop every part: the groups of `start()` calls last first, the parts of one group
        together. A Ctrl-C meanwhile kills the remaining parts at once."""
        self._force.clear()
        with self._interrupts_force_kill():
            for group in reversed(range(self._groups)):
                parts = [part for part in self._parts.values() if part.group == group]
                running = [part.name for part in parts if part.child.running()]
                if running:
                    self.say(f"stopping {', '.join(running)}")
                for part in parts:
                    part.child.request_stop()
                for part in parts:
                    part.child.stop(self._force)
        self._parts.clear()
        self._groups = 0

    @contextmanager
    def _interrupts_force_kill(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def force(signum: int, frame: FrameType | None) -> None:
            if not self._force.is_set():
                self.say("killing the remaining parts")
            self._force.set()

        previous = {signum: signal.signal(signum, force) for signum in _STOP_SIGNALS}
        try:
            yield
        finally:
            _restore(previous)

    def say(self, message: str) -> None:
        """Print one of the supervisor's own messages among the parts' output."""
        self._output(SUPERVISOR_NAME, message)


def _probe_once(child: ChildProcess, set_up: bool) -> bool:
    """One probe, run in a probe thread: a starting part's readiness (and its set-up once it
    answers), a ready part's liveness."""
    if not child.answers(alive=not set_up):
        return False
    if set_up:
        child.set_up()
    return True


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP interrupt the main thread like Ctrl-C
    (KeyboardInterrupt), so one `except KeyboardInterrupt` handles every way of stopping.

    SIGINT is included because a shell starts background commands with SIGINT ignored.
    """
    previous = {
        signum: signal.signal(signum, signal.default_int_handler) for signum in _STOP_SIGNALS
    }
    try:
        yield
    finally:
        _restore(previous)


_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def _restore(handlers: dict[signal.Signals, _Handler]) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
