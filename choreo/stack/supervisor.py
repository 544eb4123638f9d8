"""The supervisor: starts parts and waits until they are ready, restarts the ones allowed to
restart, and stops everything in reverse order of start so that nothing is left behind."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
_STABLE_AFTER = 60.0
"""A part ready this long is healthy again: its next crash restarts it without delay growth."""


class Supervisor:
    """Runs the stack's parts as child processes. Driven from one thread (normally the main
    thread, which lets Ctrl-C during a stop kill the remaining parts at once)."""

    def __init__(self, output: OutputSink = log_output, *, restart_timeout: float = 60.0) -> None:
        self._output = output
        self._restart_timeout = restart_timeout
        self._groups: list[list[ChildProcess]] = []
        """The parts of each `start()` call, in order."""
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
        return tuple(child for group in self._groups for child in group)

    def child(self, name: str) -> ChildProcess:
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(name)

    def kill(self, name: str, signum: signal.Signals = signal.SIGKILL) -> None:
        """Signal one part's main process, as a crash would (for chaos tests)."""
        self.child(name).send_signal(signum)

    def start(
        self, specs: Sequence[ProcessSpec], *, timeout: float, progress: Progress | None = None
    ) -> None:
        """Spawn every part of `specs`, then wait until all of them are ready, in parallel."""
        started_at = time.monotonic()
        group: list[ChildProcess] = []
        self._groups.append(group)
        for spec in specs:
            if any(child.name == spec.name for child in self.children):
                raise StackError(f"{spec.name} is already supervised")
            child = ChildProcess(spec, self._output)
            child.spawn()
            group.append(child)
        pending = list(group)
        if progress is not None:
            progress([child.name for child in pending])
        while pending:
            for child in list(pending):
                if child.check_ready():
                    pending.remove(child)
                    self.say(f"{child.name} ready in {time.monotonic() - started_at:.1f} s")
                    if progress is not None:
                        progress([child.name for child in pending])
            if not pending:
                break
            if time.monotonic() - started_at > timeout:
                raise ReadinessTimeoutError([child.name for child in pending], timeout)
            time.sleep(0.1)

    def watch(self, until: threading.Event | None = None, poll_interval: float = 0.2) -> None:
        """Block while the parts run: restart a part that exits if its spec allows it (with a
        growing delay), raise PartExitedError for one that may not restart. Returns when `until`
        is set."""
        delays: dict[str, float] = {}
        restart_at: dict[str, float] = {}
        while until is None or not until.is_set():
            now = time.monotonic()
            for child in self.children:
                returncode = child.poll()
                if returncode is None:
                    if child.ready_since is not None and now - child.ready_since > _STABLE_AFTER:
                        delays.pop(child.name, None)
                    continue
                if child.name in restart_at:
                    if now >= restart_at[child.name]:
                        del restart_at[child.name]
                        if not self._restart(child):
                            restart_at[child.name] = now + self._next_delay(delays, child.name)
                    continue
                if not child.spec.restart:
                    raise PartExitedError(child.name, returncode, child.tail())
                delay = self._next_delay(delays, child.name)
                restart_at[child.name] = now + delay
                self.say(f"{child.name} exited with code {returncode}; restarting in {delay:.0f} s")
            if until is not None:
                until.wait(poll_interval)
            else:
                time.sleep(poll_interval)

    @staticmethod
    def _next_delay(delays: dict[str, float], name: str) -> float:
        delay = delays.get(name, _FIRST_RESTART_DELAY)
        delays[name] = min(delay * 2, _MAX_RESTART_DELAY)
        return delay

    def _restart(self, child: ChildProcess) -> bool:
        child.stop()  # reaps the old process and whatever is left in its group
        try:
            child.start(self._restart_timeout)
        except StackError as error:
            self.say(f"{child.name} did not restart: {error}")
            child.stop()
            return False
        self.say(f"{child.name} restarted")
        return True

    def stop(self) -> None:
        """Stop every part: the groups of `start()` calls last first, the parts of one group
        together. A Ctrl-C meanwhile kills the remaining parts at once."""
        self._force.clear()
        with self._interrupts_force_kill():
            for group in reversed(self._groups):
                running = [child.name for child in group if child.running()]
                if running:
                    self.say(f"stopping {', '.join(running)}")
                for child in group:
                    child.request_stop()
                for child in group:
                    child.stop(self._force)
        self._groups.clear()

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
