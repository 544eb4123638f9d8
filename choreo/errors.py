"""The kit's root exception: every error says whether trying again can help."""

from __future__ import annotations


class ChoreoError(Exception):
    """Root of every error the kit raises.

    `retriable` decides what a consumer does with a record whose handler raised it: retry with
    backoff (a database, broker or upstream that may come back) or park it in the dead-letter
    topic at once (a record that can never be applied).
    """

    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable


class TransientError(ChoreoError):
    """Something outside the process failed in a way that may pass: try again later."""

    retriable = True


class PermanentError(ChoreoError):
    """The input can never be applied as it is: trying again cannot help."""

    retriable = False
