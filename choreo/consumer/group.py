"""The idempotent consumer: inbox table, retry policy, dead letters, offset commits.

Each record is applied in its own unit of work together with its inbox row, so a record
delivered twice is applied once. Kafka offsets are committed only after that transaction.
Partitions are worked concurrently, each by its own worker; records of one partition (so of
one key) strictly in order, and a record waiting out its retries holds back only its own
partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError, MessageSizeTooLargeError
from prometheus_client import Counter
from sqlalchemy import Column, DateTime, PrimaryKeyConstraint, Table, Text, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from choreo import kafka
from choreo.avro import SchemaStore
from choreo.db import UnitOfWork, UnitOfWorkFactory, kit_metadata
from choreo.dead_letters import Origin, dead_letter_headers, replayed_origin
from choreo.errors import ChoreoError
from choreo.events import Event, decode_record

log = logging.getLogger(__name__)

inbox_table = Table(
    "inbox",
    kit_metadata,
    Column("consumer", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer", "event_id"),
)

RECORDS = Counter(
    "choreo_consumer_records_total",
    "Records handled by consumers, by outcome",
    ["consumer", "topic", "outcome"],
)
RETRIES = Counter("choreo_consumer_retries_total", "Retried handler attempts", ["consumer"])
REWINDS = Counter(
    "choreo_consumer_log_rewinds_total",
    "Partitions re-read from their start because their log ended below the position",
    ["consumer", "topic"],
)

Handler = Callable[[Event, UnitOfWork], Awaitable[None]]

# SQLSTATE classes worth another try: connection problems, serialization failures, deadlocks,
# lock timeouts, too many connections, server shutting down.
_RETRIABLE_SQLSTATES = ("08", "40001", "40P01", "55P03", "53300", "57P")


def is_retriable(error: BaseException) -> bool:
    """Whether trying again may succeed; anything not known to be transient is permanent."""
    if isinstance(error, ChoreoError):
        return error.retriable
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        sqlstate = getattr(error.orig, "sqlstate", None) or ""
        return sqlstate.startswith(_RETRIABLE_SQLSTATES)
    return isinstance(error, TimeoutError | ConnectionError | OSError)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_seconds: float = 0.2
    max_seconds: float = 5.0


class _AlreadyAppliedError(Exception):
    """The event was already applied by this consumer (inbox hit)."""


class Consumer:
    """Applies the records of `handlers`' topics, each once, and dead-letters the unusable."""

    def __init__(
        self,
        *,
        name: str,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        handlers: Mapping[str, Mapping[str, Handler]],
        uow_factory: UnitOfWorkFactory,
        store: SchemaStore,
        dlq_topic: str,
        retry_topic: str | None = None,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        """`handlers` maps a physical topic to {event type: handler}; other types are skipped.

        `retry_topic` holds replayed dead letters for this consumer only: each is applied with
        the handlers of the topic it first failed on (`choreo.dead_letters`).
        """
        self.name = name
        self._consumer = consumer
        self._producer = producer
        self._handlers = handlers
        self._uow_factory = uow_factory
        self._store = store
        self._dlq_topic = dlq_topic
        self._retry_topic = retry_topic
        self._retry = retry
        self._stopping = asyncio.Event()
        self._workers: dict[TopicPartition, _PartitionWorker] = {}

    @property
    def topics(self) -> list[str]:
        return list(self._handlers)

    def stop(self) -> None:
        """Finish the record in hand, commit, and leave the group."""
        self._stopping.set()

    async def close(self) -> None:
        """Release the Kafka client of a consumer that was never `run()`."""
        await self._consumer.stop()

    async def run(self) -> None:
        """Join the group and apply records until `stop()`; then commit and leave.

        Each assigned partition has a worker that applies its records in order. While a
        worker is busy its partition is paused, so the poll loop keeps feeding the other
        partitions: a record that waits out its retries holds back only its own partition.
        Offsets of applied records are committed after every poll.
        """
        retry_topics = [self._retry_topic] if self._retry_topic else []
        self._consumer.subscribe([*self.topics, *retry_topics], listener=_Rebalance(self))
        await self._consumer.start()
        try:
            while not self._stopping.is_set():
                batch = await self._consumer.getmany(timeout_ms=100, max_records=500)
                for tp, records in batch.items():
                    self._worker(tp).feed(records)
                    self._consumer.pause(tp)
                for tp, worker in list(self._workers.items()):
                    worker.raise_failure()
                    if worker.idle and tp in self._consumer.paused():
                        self._consumer.resume(tp)
                await self._rewind_where_the_log_shrank()
                await self._commit(self._workers)
        finally:
            try:
                await self._drain(list(self._workers))
            finally:
                await self._consumer.stop()

    async def _rewind_where_the_log_shrank(self) -> None:
        """Re-read from its start a partition whose log now ends below this consumer's position.

        A log that shrank under a consumer was restarted, truncated or re-created (a broker
        that came back empty, a re-created topic, an unclean leader election): the records now
        below the position are new, and skipping them would lose them silently. Apache Kafka
        answers OFFSET_OUT_OF_RANGE there (aiokafka then resets to the earliest offset); Tansu
        answers with an empty fetch and a high watermark below the position, which this
        catches after every poll. The inbox makes reading applied records again harmless.
        """
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is None:  # not fetched yet: the position may not be known either
                continue
            position = await self._consumer.position(tp)
            if position <= end:
                continue
            log.error(
                "consumer %s: %s[%d] ends at offset %d, below this consumer's position %d: the "
                "log was restarted, truncated or re-created; re-reading it from its start",
                self.name,
                tp.topic,
                tp.partition,
                end,
                position,
            )
            REWINDS.labels(self.name, tp.topic).inc()
            worker = self._workers.get(tp)
            if worker is not None:
                worker.rewind()  # the records it holds go first; the poll loop resumes after
            self._consumer.seek(tp, 0)  # below the log start, Kafka resets to the earliest

    def _worker(self, tp: TopicPartition) -> _PartitionWorker:
        if tp not in self._workers:
            self._workers[tp] = _PartitionWorker(tp, self.handle, self._stopping)
        return self._workers[tp]

    async def _drain(self, partitions: list[TopicPartition]) -> None:
        """Let these partitions' workers finish the record in hand, commit, forget them."""
        workers = {tp: self._workers.pop(tp) for tp in partitions if tp in self._workers}
        for worker in workers.values():
            await worker.finish()
        await self._commit(workers)

    async def _commit(self, workers: Mapping[TopicPartition, _PartitionWorker]) -> None:
        offsets = {tp: offset for tp, w in workers.items() if (offset := w.take_offset())}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as error:
            # The group moved on without us (a rebalance, or a broker that forgot the group):
            # aiokafka rejoins, and whoever gets these partitions re-reads from the last
            # committed offset; the inbox skips what was applied.
            log.warning("consumer %s: commit refused, the group rebalanced: %s", self.name, error)

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Apply one record, or dead-letter it; returns once it needs no more work.

        Whatever a record holds (any headers, key or value), it is applied or dead-lettered
        with its original bytes: it never stops the partition or crashes the consumer.
        """
        origin = Origin(record.topic, record.partition, record.offset)
        try:
            if record.topic == self._retry_topic:
                origin = replayed_origin(record.headers)
            event = decode_record(record.headers, record.value, self._store)
        except ChoreoError as error:
            await self._dead_letter(record, origin, error, attempts=1)
            return
        except Exception as error:
            # Only the kit's own errors should leave decoding: anything else is a bug in the
            # kit, and still no reason to stop the partition.
            log.exception("consumer %s: decoding raised %s, a bug", self.name, type(error).__name__)
            await self._dead_letter(record, origin, error, attempts=1)
            return
        handler = self._handlers.get(origin.topic, {}).get(event.type)
        if handler is None:
            RECORDS.labels(self.name, record.topic, "ignored").inc()
            return
        attempts = 0
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_retriable),
                stop=stop_after_attempt(self._retry.max_attempts),
                wait=wait_exponential_jitter(
                    multiplier=self._retry.initial_seconds,
                    max=self._retry.max_seconds,
                    jitter=self._retry.initial_seconds,
                ),
                reraise=False,
            ):
                with attempt:
                    attempts += 1
                    if attempts > 1:
                        RETRIES.labels(self.name).inc()
                    await self._apply(event, handler)
        except _AlreadyAppliedError:
            RECORDS.labels(self.name, record.topic, "duplicate").inc()
            return
        except RetryError as exhausted:
            cause = exhausted.last_attempt.exception() or exhausted
            await self._dead_letter(record, origin, cause, attempts=attempts)
            return
        except Exception as error:
            await self._dead_letter(record, origin, error, attempts=attempts)
            return
        RECORDS.labels(self.name, record.topic, "applied").inc()

    async def _apply(self, event: Event, handler: Handler) -> None:
        async with self._uow_factory() as uow:
            claimed = await uow.session.execute(
                insert(inbox_table)
                .values(consumer=self.name, event_id=event.id)
                .on_conflict_do_nothing()
                .returning(inbox_table.c.event_id)
            )
            if claimed.first() is None:
                raise _AlreadyAppliedError
            await handler(event, uow)

    async def _dead_letter(
        self,
        record: ConsumerRecord[bytes, bytes],
        origin: Origin,
        error: BaseException,
        *,
        attempts: int,
    ) -> None:
        log.error(
            "consumer %s dead-letters %s[%d]@%d after %d attempt(s): %s: %s",
            self.name,
            record.topic,
            record.partition,
            record.offset,
            attempts,
            type(error).__name__,
            str(error)[:300],
        )
        headers = dead_letter_headers(
            record.headers, origin, consumer=self.name, error=error, attempts=attempts
        )
        try:
            await self._send_dead_letter(record, record.value, headers)
        except MessageSizeTooLargeError:
            # The broker took the record but not the record plus our headers: park it without
            # its value rather than stop the partition for good. Loud, because bytes are lost.
            size = len(record.value or b"")
            log.critical(
                "consumer %s: the dead letter of %s[%d]@%d is too large; parked without its "
                "%d-byte value",
                self.name,
                record.topic,
                record.partition,
                record.offset,
                size,
            )
            headers = dead_letter_headers(
                record.headers,
                origin,
                consumer=self.name,
                error=error,
                attempts=attempts,
                value_dropped=size,
            )
            await self._send_dead_letter(record, None, headers)
        RECORDS.labels(self.name, record.topic, "dead_lettered").inc()

    async def _send_dead_letter(
        self,
        record: ConsumerRecord[bytes, bytes],
        value: bytes | None,
        headers: list[tuple[str, bytes | None]],
    ) -> None:
        # The offset is committed only once the dead letter is acknowledged: wait out a broker
        # outage rather than lose the record.
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(lambda e: not isinstance(e, MessageSizeTooLargeError)),
            wait=wait_exponential_jitter(multiplier=0.5, max=10.0, jitter=0.5),
            reraise=True,
        ):
            with attempt:
                await kafka.send_record(
                    self._producer,
                    self._dlq_topic,
                    key=record.key,
                    value=value,
                    headers=headers,
                )


class _PartitionWorker:
    """Applies one partition's records strictly in order, one at a time."""

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
    def idle(self) -> bool:
        return not self._pending and (self._task is None or self._task.done())

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
            await self._handle(record)
            if generation == self._generation:
                self._applied = record.offset + 1


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Before partitions move to another member, finish and commit what was taken."""

    def __init__(self, consumer: Consumer) -> None:
        self._owner = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._owner._drain(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        pass
