"""The consumer group member: subscribes, polls, hands each partition's records to its worker,
commits what was applied, drains on rebalance, and re-reads a log that shrank under it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError
from prometheus_client import Counter, Gauge

from choreo.avro import SchemaStore
from choreo.consumer.partitions import PartitionWorker
from choreo.consumer.records import Handler, RecordHandler, RetryPolicy
from choreo.db import UnitOfWorkFactory
from choreo.kafka import SESSION_TIMEOUT_MS
from choreo.signing import EventKeys

log = logging.getLogger(__name__)

DEFAULT_RETRY = RetryPolicy()

REWINDS = Counter(
    "choreo_consumer_log_rewinds_total",
    "Partitions re-read from their start because their log ended below the position",
    ["consumer", "topic"],
)
LAG = Gauge(
    "choreo_consumer_lag_records",
    "Records of an assigned partition not taken up yet: the log's end as last fetched, minus"
    " the fetch position, plus the records fetched and waiting for the partition's worker",
    ["consumer", "topic", "partition"],
)


IDLE_AFTER_SECONDS = 2.0
IDLE_FETCH_MAX_WAIT_MS = 2000
"""A consumer that has read nothing for `IDLE_AFTER_SECONDS` asks the broker to hold its
fetches up to `IDLE_FETCH_MAX_WAIT_MS` (when it polls faster than that), and goes back to its
own wait with the first record it reads. The memory broker of `choreo up` is polled every
30 ms for latency (choreo.kafka.FAST_FETCH_MAX_WAIT_MS), and answering polls is nearly all an
idle broker does: 500 -> 2,000 ms took it from 0.044 to 0.013 cores, and the first record after
a quiet spell waits longer (choreo bench at one order per 4 s: p50 161 -> 203 ms; issue 14)."""


RETRY_LOOK_EVERY_SECONDS = 5.0
RETRY_LOOK_SECONDS = 0.5
"""The retry topic holds only what an operator replays (`choreo dlq replay`), so its partitions
are left out of the consumer's fetches (paused) except for `RETRY_LOOK_SECONDS` every
`RETRY_LOOK_EVERY_SECONDS`, and for as long as they deliver records: a replay is applied
within seconds, and the broker is not asked about a topic that is nearly always empty with
every poll. On the embedded broker each topic in a fetch costs it a metadata look-up and each
partition a read, at every re-check within the wait: one consumer of 4 topics x 2 partitions
measured ~0.086 cores of the broker, of 3 topics ~0.066 (issue 14). A look lasts long enough
for fetches of the busy pace; while the consumer is idle its fetches wait
`IDLE_FETCH_MAX_WAIT_MS`, longer than a look, so then the retry partitions stay in them."""


MAX_PENDING = 1000
"""Records a partition's worker may hold before its partition is paused (resumed below half)."""

COMMIT_INTERVAL_SECONDS = 0.5
# How long a member may wait for its first partitions before it says why: a group waits for
# a member that stopped without leaving (killed, crashed) until that member's session times
# out (`choreo.kafka.SESSION_TIMEOUT_MS`), then rebalances; meanwhile nothing is consumed.
ASSIGNMENT_NOTICE_SECONDS = 3.0
"""How often applied offsets are committed while records flow (Kafka's auto-commit: 5 s). A
record applied but not committed yet is read again after a crash or rebalance, and the inbox
skips it; committing after every poll cost a broker request per poll (issue 14)."""


class _FetchPace:
    """Switches a consumer's `fetch.max.wait.ms` between its own (busy) and an idle one.

    aiokafka reads the wait from its fetcher for each fetch request but has no public way to
    change it, so this sets the fetcher's attribute (aiokafka 0.14, pinned); should that
    attribute ever be missing, the pace stays as configured.
    """

    def __init__(self, consumer: AIOKafkaConsumer, clock: Callable[[], float]) -> None:
        self._fetcher = getattr(consumer, "_fetcher", None)
        busy = getattr(self._fetcher, "_fetch_max_wait_ms", None)
        self._busy = busy if isinstance(busy, int) else None
        self._idle = max(self._busy or 0, IDLE_FETCH_MAX_WAIT_MS)
        self._clock = clock
        self._last_record = clock()
        self.idle = False

    def note(self, records: int) -> None:
        """After each poll: how many records it brought."""
        if self._busy is None or self._busy == self._idle:
            return
        now = self._clock()
        if records:
            self._last_record = now
            idle = False
        else:
            idle = now - self._last_record >= IDLE_AFTER_SECONDS
        if idle != self.idle:
            self.idle = idle
            self._fetcher._fetch_max_wait_ms = self._idle if idle else self._busy  # type: ignore[union-attr]


class _RetryLooks:
    """Keeps the retry topic's partitions out of the fetches between looks
    (`RETRY_LOOK_EVERY_SECONDS`, `RETRY_LOOK_SECONDS`).

    `resting()` after each poll: the retry partitions to hold paused now. A look starts every
    `RETRY_LOOK_EVERY_SECONDS`; records from the retry topic, or an idle consumer (whose
    fetches outlast a look), keep the partitions in the fetches until a look's length passes
    without either.
    """

    def __init__(self, retry_topic: str | None, clock: Callable[[], float]) -> None:
        self._topic = retry_topic
        self._clock = clock
        self._looking_until = clock() + RETRY_LOOK_SECONDS
        self._next_look = clock() + RETRY_LOOK_EVERY_SECONDS

    def resting(
        self,
        assigned: Iterable[TopicPartition],
        batch: Mapping[TopicPartition, object],
        *,
        idle: bool,
    ) -> set[TopicPartition]:
        if self._topic is None:
            return set()
        now = self._clock()
        if idle or any(tp.topic == self._topic for tp in batch):
            self._looking_until = now + RETRY_LOOK_SECONDS
        if now >= self._next_look:
            self._looking_until = max(self._looking_until, now + RETRY_LOOK_SECONDS)
            self._next_look = now + RETRY_LOOK_EVERY_SECONDS
        if now < self._looking_until:
            return set()
        return {tp for tp in assigned if tp.topic == self._topic}


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
        retry: RetryPolicy = DEFAULT_RETRY,
        event_keys: EventKeys | None = None,
    ) -> None:
        """`handlers` maps a physical topic to {event type: handler}; other types are skipped.

        `retry_topic` holds replayed dead letters for this consumer only: each is applied with
        the handlers of the topic it first failed on (`choreo.dead_letters`). With
        `event_keys`, only records their topic's owner signed are applied (choreo.signing).
        """
        self.name = name
        self._consumer = consumer
        self._handlers = handlers
        self._retry_topic = retry_topic
        self._stopping = asyncio.Event()
        self._records = RecordHandler(
            name=name,
            producer=producer,
            handlers=handlers,
            uow_factory=uow_factory,
            store=store,
            dlq_topic=dlq_topic,
            retry_topic=retry_topic,
            retry=retry,
            stopping=self._stopping.is_set,
            event_keys=event_keys,
        )
        self._workers: dict[TopicPartition, PartitionWorker] = {}
        self.assigned_once = False  # set by the rebalance listener at the first assignment
        self._rewinds_said: dict[tuple[TopicPartition, int, int], float] = {}

    @property
    def topics(self) -> list[str]:
        return list(self._handlers)

    def outages(self) -> list[str]:
        """Records waiting out an outage now, each as `where: for N s: error`, oldest first."""
        now = time.monotonic()
        waiting = sorted(self._records.outages.values(), key=lambda outage: outage.since)
        return [f"{o.where}: for {now - o.since:.0f} s: {o.error}" for o in waiting]

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Apply one record as the running consumer would (or dead-letter it)."""
        await self._records.handle(record)

    def stop(self) -> None:
        """Finish the record in hand, commit, and leave the group."""
        self._stopping.set()

    async def close(self) -> None:
        """Release the Kafka client of a consumer that was never `run()`."""
        await self._consumer.stop()

    async def run(self) -> None:
        """Join the group and apply records until `stop()`; then commit and leave.

        Each assigned partition has a worker that applies its records in order, while the
        poll loop keeps fetching: a record that waits out its retries holds back only its own
        partition. A partition is paused only while its worker holds `MAX_PENDING` records or
        more, so that such a wait does not fill memory. Offsets of applied records are
        committed every `COMMIT_INTERVAL_SECONDS` and whenever partitions are given up.
        """
        retry_topics = [self._retry_topic] if self._retry_topic else []
        self._consumer.subscribe([*self.topics, *retry_topics], listener=_Rebalance(self))
        # aiokafka's poll waits while the group rebalances: the notice runs on its own timer.
        notice = asyncio.get_running_loop().call_later(
            ASSIGNMENT_NOTICE_SECONDS, self._tell_if_unassigned
        )
        try:
            await self._consumer.start()
        except BaseException:
            notice.cancel()
            raise
        pace = _FetchPace(self._consumer, time.monotonic)
        looks = _RetryLooks(self._retry_topic, time.monotonic)
        committed_at = time.monotonic()
        try:
            while not self._stopping.is_set():
                timeout = IDLE_FETCH_MAX_WAIT_MS if pace.idle else 100
                batch = await self._consumer.getmany(timeout_ms=timeout, max_records=500)
                pace.note(sum(len(records) for records in batch.values()))
                for tp, records in batch.items():
                    self._worker(tp).feed(records)
                self._pause_or_resume(
                    looks.resting(self._consumer.assignment(), batch, idle=pace.idle)
                )
                await self._rewind_where_the_log_shrank()
                if time.monotonic() - committed_at >= COMMIT_INTERVAL_SECONDS:
                    committed_at = time.monotonic()
                    await self._commit(self._workers)
                    # With the commit, not after every poll: the gauge is scraped every 15 s.
                    await self._measure_lag()
        finally:
            notice.cancel()
            try:
                await self._drain(list(self._workers))
            finally:
                await self._consumer.stop()

    def _pause_or_resume(self, resting: set[TopicPartition]) -> None:
        """Pause a partition whose worker holds `MAX_PENDING` records, until it holds half as
        many, and the retry partitions that rest between looks (`_RetryLooks`); resume the
        rest. Raises what a worker's record raised, a bug in the kit."""
        paused = self._consumer.paused()
        for tp in self._consumer.assignment():
            worker = self._workers.get(tp)
            if worker is not None:
                worker.raise_failure()
            pending = worker.pending if worker is not None else 0
            full = pending >= MAX_PENDING or (tp in paused and pending >= MAX_PENDING // 2)
            hold = full or tp in resting
            if hold and tp not in paused:
                self._consumer.pause(tp)
            elif not hold and tp in paused:
                self._consumer.resume(tp)

    def _tell_if_unassigned(self) -> None:
        """Say why a member that joined `ASSIGNMENT_NOTICE_SECONDS` ago consumes nothing yet: a
        new member's first assignment takes a few seconds on the embedded broker; a member
        restarted after a kill waits for its previous self's session to time out."""
        if self.assigned_once or self._stopping.is_set():
            return
        log.info(
            "consumer %s: waiting for the group to assign partitions; a member that stopped"
            " without leaving holds them until its session times out (%.0f s) and the group"
            " rebalances (a few seconds more)",
            self.name,
            SESSION_TIMEOUT_MS / 1000,
        )

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
            # Said once per partition and shape a minute: a rewind that something undoes (seen
            # with a topic re-created by a stand-in broker) would otherwise log every poll.
            said = (tp, end, position)
            now = time.monotonic()
            if now - self._rewinds_said.get(said, -math.inf) >= 60.0:
                self._rewinds_said[said] = now
                log.error(
                    "consumer %s: %s[%d] ends at offset %d, below this consumer's position %d: "
                    "the log was restarted, truncated or re-created; re-reading it from its start",
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

    async def _measure_lag(self) -> None:
        """Set each assigned partition's lag from what the client knows already (the high
        watermark of its last fetch and its position): no broker request."""
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is None:  # not fetched yet: the position may not be known either
                continue
            position = await self._consumer.position(tp)
            worker = self._workers.get(tp)
            waiting = worker.pending if worker is not None else 0
            LAG.labels(self.name, tp.topic, str(tp.partition)).set(max(end - position, 0) + waiting)

    def _worker(self, tp: TopicPartition) -> PartitionWorker:
        if tp not in self._workers:
            self._workers[tp] = PartitionWorker(
                tp, self._records.handle, self._stopping, self._records.applied_among
            )
        return self._workers[tp]

    async def _drain(self, partitions: list[TopicPartition]) -> None:
        """Let these partitions' workers finish the record in hand, commit, forget them."""
        workers = {tp: self._workers.pop(tp) for tp in partitions if tp in self._workers}
        for worker in workers.values():
            await worker.finish()
        await self._commit(workers)
        for tp in partitions:  # the member that gets them reports their lag now
            with contextlib.suppress(KeyError):
                LAG.remove(self.name, tp.topic, str(tp.partition))

    async def _commit(self, workers: Mapping[TopicPartition, PartitionWorker]) -> None:
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


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Before partitions move to another member, finish and commit what was taken."""

    def __init__(self, consumer: Consumer) -> None:
        self._owner = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if revoked:
            log.info("consumer %s: rebalancing, giving up %s", self._owner.name, _named(revoked))
        await self._owner._drain(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # One line per rebalance: how often a group rebalances is worth seeing in the logs.
        log.info("consumer %s: assigned %s", self._owner.name, _named(assigned) or "nothing")
        self._owner.assigned_once = True


def _named(partitions: Iterable[TopicPartition]) -> str:
    """`order.event[0,3] stock.updated[1]`: partitions grouped by topic."""
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return " ".join(f"{t}[{','.join(map(str, sorted(ps)))}]" for t, ps in sorted(by_topic.items()))
