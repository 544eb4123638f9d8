"""A part of the stack that runs on its own too: tests start and stop one directly, while
`choreo up` hands the part's spec to the supervisor."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

from choreo.stack.process import ChildProcess, OutputSink, ProcessSpec, log_output


class Part(ABC):
    def __init__(self, output: OutputSink = log_output) -> None:
        self._output = output
        self._child: ChildProcess | None = None

    @property
    @abstractmethod
    def spec(self) -> ProcessSpec:
        """How the supervisor runs this part."""

    @property
    def pid(self) -> int | None:
        """The process id of the running part, when started with `start()`."""
        return self._child.pid if self._child is not None else None

    def start(self, timeout: float = 30.0) -> None:
        """Run the part as a child of this process and wait until it is ready."""
        child = ChildProcess(self.spec, self._output)
        try:
            child.start(timeout)
        except BaseException:
            child.stop()
            raise
        self._child = child

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
