"""One worker per assigned partition: applies its records strictly in order, one at a time,
while the poll loop keeps feeding it and the other partitions."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

from aiokafka import ConsumerRecord, TopicPartition

from choreo.consumer.records import StoppingError


class PartitionWorker:
    """Applies one partition's records strictly in order and remembers the next offset to
    commit: the one after the last record that needs no more work."""

    def __init__(
        self,
        tp: TopicPartition,
        handle: Callable[[ConsumerRecord[bytes, bytes]], Awaitable[None]],
        stopping: asyncio.Event,
    ) -> None:
        self._tp = tp
        self._handle = handle
        self._stopping = stopping
        # Each record with the generation of the log it was read from (see `rewind`).
        self._pending: deque[tuple[int, ConsumerRecord[bytes, bytes]]] = deque()
        self._generation = 0
        self._applied: int | None = None  # next offset to commit
        self._task: asyncio.Task[None] | None = None
        self._leaving = False

    @property
    def pending(self) -> int:
        """Records fed and not yet taken up."""
        return len(self._pending)

    def feed(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        self._pending.extend((self._generation, record) for record in records)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._work(), name=f"consume {self._tp}")

    def rewind(self) -> None:
        """The partition's log was replaced: the records in hand are still events worth
        applying, but their offsets mean nothing on the new log, so none is committed."""
        self._generation += 1
        self._applied = None

    def take_offset(self) -> int | None:
        offset, self._applied = self._applied, None
        return offset

    def raise_failure(self) -> None:
        """Re-raise what killed the worker (a bug, or a broker that refused a dead letter)."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            error = self._task.exception()
            if error is not None:
                raise error

    async def finish(self) -> None:
        """Stop after the record in hand (the rest is redelivered to whoever gets them)."""
        self._leaving = True
        self._pending.clear()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    async def _work(self) -> None:
        while self._pending and not (self._leaving or self._stopping.is_set()):
            generation, record = self._pending.popleft()
            try:
                await self._handle(record)
            except StoppingError:
                return  # not applied: its offset stays uncommitted, so it is read again
            if generation == self._generation:
                self._applied = record.offset + 1
