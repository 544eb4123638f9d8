"""One record, start to finish: decode it, find its handler, apply it once (inbox) with
retries, or park it in the dead-letter topic with its original bytes.

What a failure calls for comes from `choreo.errors.failure_of`: a fault of the record is
dead-lettered at once; a lost race or a fact not seen yet is retried `max_attempts` times; an
outage of something the service needs (its database, the broker, a provider answering 5xx,
429 or not at all) is waited out for as long as it lasts, with capped backoff, and never
dead-lettered: the record is fine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Container, Mapping, Sequence
from dataclasses import dataclass

import psycopg
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import MessageSizeTooLargeError
from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception,
    wait_exponential_jitter,
)

from choreo import kafka
from choreo.avro import SchemaStore
from choreo.consumer.inbox import applied_among, claim
from choreo.db import UnitOfWork, UnitOfWorkFactory
from choreo.dead_letters import Origin, dead_letter_headers, replayed_origin
from choreo.errors import ChoreoError, Failure, RejectedEventError, failure_of
from choreo.events import Event, check_source, decode_record
from choreo.logs import collect_published, log_saga_step
from choreo.records import Record
from choreo.signing import EventKeys

log = logging.getLogger(__name__)

RECORDS = Counter(
    "choreo_consumer_records_total",
    "Records handled by consumers, by outcome",
    ["consumer", "topic", "outcome"],
)
RETRIES = Counter(
    "choreo_consumer_retries_total", "Retried handler attempts, by failure", ["consumer", "failure"]
)
DEAD_LETTERS = Counter(
    "choreo_consumer_dead_letters_total",
    "Records sent to the consumer's dead-letter topic, by the topic read and the error's class",
    ["consumer", "topic", "error"],
)

Handler = Callable[[Event[Record], UnitOfWork], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """`max_attempts` bounds the tries of a record whose failure may pass (`Failure.RETRY`);
    an outage is tried until it ends. Backoff doubles from `initial_seconds` up to
    `max_seconds`, with up to `initial_seconds` of jitter."""

    max_attempts: int = 5
    initial_seconds: float = 0.2
    max_seconds: float = 5.0


class StoppingError(Exception):
    """The consumer is stopping while this record waits out an outage: it is not applied, its
    offset is not committed, and it is read again after the restart."""


@dataclass(frozen=True)
class Outage:
    """A record waiting out an outage: where, since when (monotonic seconds), and why."""

    where: str
    since: float
    error: str


class RecordHandler:
    """Applies one consumer's records, each once, and dead-letters the unusable."""

    def __init__(
        self,
        *,
        name: str,
        producer: AIOKafkaProducer,
        handlers: Mapping[str, Mapping[str, Handler]],
        uow_factory: UnitOfWorkFactory,
        store: SchemaStore,
        dlq_topic: str,
        retry_topic: str | None,
        retry: RetryPolicy,
        stopping: Callable[[], bool],
        event_keys: EventKeys | None = None,
    ) -> None:
        """With `event_keys`, a record counts only when the owner of its topic signed it
        (choreo.signing); without, only its `ce_source` is checked."""
        self.name = name
        self._producer = producer
        self._handlers = handlers
        self._uow_factory = uow_factory
        self._store = store
        self._dlq_topic = dlq_topic
        self.retry_topic = retry_topic
        self._retry = retry
        self._stopping = stopping
        self._event_keys = event_keys
        self.outages: dict[str, Outage] = {}
        """Records waiting out an outage now, by where they are (`topic[partition]@offset`)."""

    async def applied_among(self, event_ids: Sequence[str]) -> set[str]:
        """Which of `event_ids` this consumer has applied: one query on its inbox, for a worker
        with many records in hand (a log read again after a restart or a rebalance). When the
        query fails (an outage), none: each record then takes its own claim, which waits the
        outage out."""
        if not event_ids:
            return set()
        try:
            async with self._uow_factory() as uow:
                return await applied_among(uow, self.name, event_ids)
        except (DBAPIError, psycopg.Error, OSError) as error:
            log.debug("consumer %s: the inbox could not be read in bulk: %s", self.name, error)
            return set()

    async def handle(
        self, record: ConsumerRecord[bytes, bytes], applied: Container[str] = frozenset()
    ) -> None:
        """Apply one record, or dead-letter it; returns once it needs no more work.

        Whatever a record holds (any headers, key or value), it is applied or dead-lettered
        with its original bytes: it never stops the partition or crashes the consumer.
        `applied`: event ids this consumer is known to have applied (`applied_among`); such a
        record, once decoded and checked like any other, is a duplicate without a transaction
        of its own. Raises StoppingError when the consumer stops while the record waits out
        an outage.
        """
        origin = Origin(record.topic, record.partition, record.offset)
        try:
            if record.topic == self.retry_topic:
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
        try:
            check_source(event)
            if self._event_keys is not None:
                self._event_keys.verify(event.topic, record.headers, record.value)
        except RejectedEventError as error:
            await self._dead_letter(record, origin, error, attempts=1)
            return
        if event.id in applied:
            RECORDS.labels(self.name, record.topic, "duplicate").inc()
            log_saga_step(log, event, "duplicate", ())
            return
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        published = collect_published()
        try:
            outcome = await self._apply_with_retries(event, handler, where)
        finally:
            self.outages.pop(where, None)
        if isinstance(outcome, tuple):
            cause, attempts = outcome
            await self._dead_letter(record, origin, cause, attempts=attempts)
            return
        RECORDS.labels(self.name, record.topic, outcome).inc()
        log_saga_step(log, event, outcome, published)

    async def _apply_with_retries(
        self, event: Event[Record], handler: Handler, where: str
    ) -> str | tuple[BaseException, int]:
        """`applied` or `duplicate`; or the error and attempts of a record to dead-letter."""
        retry = self._retry

        def give_up(state: RetryCallState) -> bool:
            error = state.outcome.exception() if state.outcome else None
            if self._stopping() or error is None:
                return True
            failure = failure_of(error)
            return failure is Failure.RETRY and state.attempt_number >= retry.max_attempts

        def note(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            failure = failure_of(error) if error else Failure.PERMANENT
            RETRIES.labels(self.name, failure.value).inc()
            if failure is not Failure.OUTAGE:
                return
            said = (
                f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
            )
            if where not in self.outages:
                log.warning("consumer %s: %s waits out an outage: %s", self.name, where, said)
            since = self.outages[where].since if where in self.outages else time.monotonic()
            self.outages[where] = Outage(where, since, said)

        attempts = 0
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(lambda e: failure_of(e) is not Failure.PERMANENT),
                stop=give_up,
                wait=wait_exponential_jitter(
                    multiplier=retry.initial_seconds,
                    max=retry.max_seconds,
                    jitter=retry.initial_seconds,
                ),
                before_sleep=note,
                reraise=False,
            ):
                with attempt:
                    attempts += 1
                    async with self._uow_factory() as uow:
                        if not await claim(uow, self.name, event.id):
                            return "duplicate"
                        await handler(event, uow)
        except RetryError as exhausted:
            cause = exhausted.last_attempt.exception() or exhausted
            if self._stopping() and failure_of(cause) is not Failure.PERMANENT:
                raise StoppingError from cause
            return cause, attempts
        except Exception as error:
            return error, attempts
        if where in self.outages:
            log.warning("consumer %s: %s applied; the outage is over", self.name, where)
        return "applied"

    async def _dead_letter(
        self,
        record: ConsumerRecord[bytes, bytes],
        origin: Origin,
        error: BaseException,
        *,
        attempts: int,
    ) -> None:
        if isinstance(error, RejectedEventError):
            # Not a fault of this service: someone wrote what its facts contradict.
            log.warning(
                "consumer %s rejects %s[%d]@%d (dead-lettered): %s",
                self.name,
                record.topic,
                record.partition,
                record.offset,
                str(error)[:300],
            )
        else:
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
        outcome = "rejected" if isinstance(error, RejectedEventError) else "dead_lettered"
        RECORDS.labels(self.name, record.topic, outcome).inc()
        DEAD_LETTERS.labels(self.name, record.topic, type(error).__name__).inc()

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
                    self._producer, self._dlq_topic, key=record.key, value=value, headers=headers
                )
