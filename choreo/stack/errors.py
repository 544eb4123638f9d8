"""The stack's root exception: a part that could not be started, or that stopped working."""

from __future__ import annotations

from collections.abc import Sequence

from choreo.errors import ChoreoError


class StackError(ChoreoError):
    """The embedded stack could not start a part, or a part stopped working."""


class PartExitedError(StackError):
    """A part's process exited when it should have kept running."""

    def __init__(self, part: str, returncode: int, output_tail: Sequence[str] = ()) -> None:
        lines = "\n".join(f"  {line}" for line in output_tail)
        message = f"{part} exited with code {returncode}"
        super().__init__(f"{message}; its last output:\n{lines}" if lines else message)
        self.part = part
        self.returncode = returncode


class ReadinessTimeoutError(StackError):
    """Parts did not become ready before their deadline."""

    def __init__(self, parts: Sequence[str], timeout: float) -> None:
        super().__init__(f"not ready after {timeout:.0f} s: {', '.join(parts)}")
        self.parts = tuple(parts)
