"""One worker per assigned partition: applies its records strictly in order, one at a time,
while the poll loop keeps feeding it and the other partitions."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Container, Sequence

from aiokafka import ConsumerRecord, TopicPartition

from choreo.consumer.records import StoppingError
from choreo.events import event_id_of

BULK_CHECK_AT = 16
"""Records in hand from which a worker asks the inbox, in one query, which of the next
`BULK_CHECK_SIZE` its consumer has applied already, and skips those without a transaction
each. Under load a worker holds a few records; it holds many when it reads a log again (a
memory broker restarted: every relay publishes its last 15 minutes again; a rebalance; a
consumer that was down), nearly all of them applied before."""
BULK_CHECK_SIZE = 500


class PartitionWorker:
    """Applies one partition's records strictly in order and remembers the next offset to
    commit: the one after the last record that needs no more work."""

    def __init__(
        self,
        tp: TopicPartition,
        handle: Callable[[ConsumerRecord[bytes, bytes], Container[str]], Awaitable[None]],
        stopping: asyncio.Event,
        applied_among: Callable[[Sequence[str]], Awaitable[set[str]]] | None = None,
    ) -> None:
        """`handle(record, applied)` applies one record, `applied` the event ids known to be
        applied already; `applied_among(ids)` says which of `ids` are (see BULK_CHECK_AT)."""
        self._tp = tp
        self._handle = handle
        self._stopping = stopping
        self._applied_among = applied_among
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
        applied: set[str] = set()
        covered = 0  # records at the head of the queue whose ids `applied` was asked about
        while self._pending and not (self._leaving or self._stopping.is_set()):
            if covered == 0:
                applied = set()
                if self._applied_among is not None and len(self._pending) >= BULK_CHECK_AT:
                    ahead = list(itertools.islice(self._pending, BULK_CHECK_SIZE))
                    ids = [event_id_of(record.headers) for _, record in ahead]
                    applied = await self._applied_among([i for i in ids if i is not None])
                    covered = len(ahead)
            generation, record = self._pending.popleft()
            covered = max(0, covered - 1)
            try:
                await self._handle(record, applied)
            except StoppingError:
                return  # not applied: its offset stays uncommitted, so it is read again
            if generation == self._generation:
                self._applied = record.offset + 1
