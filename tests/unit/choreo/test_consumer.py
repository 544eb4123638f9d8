"""The consumer's parts that need no broker (choreo.consumer): a partition's worker, and the poll
loop's pausing, committing and re-reading, driven by a stand-in for aiokafka's consumer.

The fetch pace has its own file (test_fetch_pace.py); the retry policy's decisions belong to
choreo.errors and its tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Awaitable, Callable, Container, Iterable, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import REGISTRY

from choreo.avro import default_store
from choreo.consumer import Consumer, group
from choreo.consumer.group import _named
from choreo.consumer.partitions import BULK_CHECK_AT, PartitionWorker
from choreo.consumer.records import Outage, StoppingError
from choreo.testing import eventually

TP0 = TopicPartition("order.event", 0)
TP1 = TopicPartition("order.event", 1)

Record = ConsumerRecord[bytes, bytes]


def records(tp: TopicPartition, offsets: Iterable[int]) -> list[Record]:
    return [
        ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, None, b"", None, 0, 0, ())
        for offset in offsets
    ]


# --- one partition's worker ---------------------------------------------------------------------


class Gate:
    """A handler that applies records only as the test lets them through (`let(n)`), and
    remembers the offsets it applied."""

    def __init__(self, open: bool = False) -> None:
        self.applied: list[int] = []
        self._permits = asyncio.Semaphore(1_000_000 if open else 0)

    def let(self, records: int = 1) -> None:
        for _ in range(records):
            self._permits.release()

    async def __call__(self, record: Record) -> None:
        await self._permits.acquire()
        self.applied.append(record.offset)


def worker(handle: Callable[[Record], Awaitable[None]]) -> PartitionWorker:
    async def each(record: Record, applied: Container[str]) -> None:
        await handle(record)

    return PartitionWorker(TP0, each, asyncio.Event())


def with_id(record: Record, event_id: str) -> Record:
    return dataclasses.replace(record, headers=(("ce_id", event_id.encode()),))


async def test_a_worker_with_many_records_in_hand_asks_the_inbox_once_for_them() -> None:
    asked: list[list[str]] = []
    seen: list[tuple[int, bool]] = []

    async def applied_among(ids: Sequence[str]) -> set[str]:
        asked.append(list(ids))
        return {i for i in ids if int(i) % 2 == 0}  # the even ones were applied before

    async def handle(record: Record, applied: Container[str]) -> None:
        seen.append((record.offset, str(record.offset) in applied))

    working = PartitionWorker(TP0, handle, asyncio.Event(), applied_among)
    many = [with_id(r, str(r.offset)) for r in records(TP0, range(BULK_CHECK_AT + 4))]
    working.feed(many)
    await eventually(lambda: len(seen) == len(many), "every record handled", timeout=5)

    assert asked == [[str(n) for n in range(len(many))]]  # one question for all of them
    assert seen == [(n, n % 2 == 0) for n in range(len(many))]  # in order, each told
    # A few records in hand (the steady state under load): no question, nothing known.
    working.feed([with_id(r, "100") for r in records(TP0, [100])])
    await eventually(lambda: len(seen) == len(many) + 1, "the last record handled", timeout=5)
    assert (len(asked), seen[-1]) == (1, (100, False))


async def test_a_worker_applies_its_records_in_order_and_offers_the_next_offset_once() -> None:
    gate = Gate(open=True)
    working = worker(gate)

    working.feed(records(TP0, [7, 8]))
    working.feed(records(TP0, [9]))
    await eventually(lambda: len(gate.applied) == 3, "three records applied", timeout=5)

    assert gate.applied == [7, 8, 9]
    assert working.take_offset() == 10  # the next one to read
    assert working.take_offset() is None  # nothing applied since


async def test_a_record_in_hand_when_the_consumer_stops_is_read_again() -> None:
    taken: list[int] = []

    async def stopping_on_the_second(record: Record) -> None:
        taken.append(record.offset)
        if record.offset == 1:
            raise StoppingError

    working = worker(stopping_on_the_second)
    working.feed(records(TP0, [0, 1, 2]))
    await eventually(lambda: taken == [0, 1], "the second record taken up", timeout=5)
    await working.finish()

    assert taken == [0, 1]  # the worker stopped there
    assert working.take_offset() == 1  # offset 1 is not passed: it is read again


async def test_a_worker_given_up_finishes_the_record_in_hand_and_drops_the_rest() -> None:
    gate = Gate()
    working = worker(gate)
    working.feed(records(TP0, [0, 1, 2, 3]))
    await eventually(lambda: working.pending == 3, "the first record taken up", timeout=5)

    finishing = asyncio.create_task(working.finish())
    await asyncio.sleep(0.01)
    assert not finishing.done()  # waits for the record in hand
    gate.let()
    await finishing

    assert (gate.applied, working.pending, working.take_offset()) == ([0], 0, 1)


async def test_what_killed_a_worker_is_raised_to_the_poll_loop() -> None:
    taken: list[int] = []

    async def buggy(record: Record) -> None:
        taken.append(record.offset)
        if record.offset == 5:
            raise KeyError("a bug")

    working = worker(buggy)
    working.feed(records(TP0, [4, 5, 6]))
    await eventually(lambda: taken == [4, 5], "the second record taken up", timeout=5)
    await asyncio.sleep(0)

    with pytest.raises(KeyError, match="a bug"):
        working.raise_failure()
    assert working.take_offset() == 5


async def test_after_a_rewind_the_records_in_hand_apply_but_commit_nothing() -> None:
    gate = Gate()
    working = worker(gate)
    working.feed(records(TP0, [40, 41]))
    gate.let()
    await eventually(lambda: gate.applied == [40], "the first record applied", timeout=5)

    working.rewind()  # the log was replaced: offset 41 means nothing on the new one
    gate.let()
    await eventually(lambda: gate.applied == [40, 41], "the record in hand applied", timeout=5)
    assert working.take_offset() is None

    working.feed(records(TP0, [0, 1]))  # read again from the new log's start
    gate.let(2)
    await eventually(lambda: len(gate.applied) == 4, "the new log's records applied", timeout=5)
    assert working.take_offset() == 2


def test_partitions_are_named_by_topic_in_one_line() -> None:
    partitions = [TP1, TopicPartition("stock.updated", 2), TP0]

    assert _named(partitions) == "order.event[0,1] stock.updated[2]"
    assert _named([]) == ""


# --- the poll loop ------------------------------------------------------------------------------


class Kafka:
    """What the poll loop asks of aiokafka's consumer: each poll returns the next of `polls`
    (then nothing); `ends` are the partitions' high watermarks; what it was told is in `told`."""

    def __init__(self, *polls: dict[TopicPartition, list[Record]]) -> None:
        self.polls: deque[dict[TopicPartition, list[Record]]] = deque(polls)
        self.ends: dict[TopicPartition, int] = {}
        self.positions: dict[TopicPartition, int] = {}
        self.paused_now: set[TopicPartition] = set()
        self.told: list[tuple[Any, ...]] = []
        self.polled = 0

    def subscribe(self, topics: list[str], listener: object) -> None:
        del topics, listener

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Record]]:
        del timeout_ms, max_records
        await asyncio.sleep(0.002)
        self.polled += 1
        batch = self.polls.popleft() if self.polls else {}
        for tp, fetched in batch.items():
            self.positions[tp] = fetched[-1].offset + 1
        return batch

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_now)

    def pause(self, tp: TopicPartition) -> None:
        self.paused_now.add(tp)
        self.told.append(("pause", tp))

    def resume(self, tp: TopicPartition) -> None:
        self.paused_now.discard(tp)
        self.told.append(("resume", tp))

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends.get(tp)

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset
        self.told.append(("seek", tp, offset))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.told.append(("commit", dict(offsets)))

    def moves(self) -> list[tuple[Any, ...]]:
        """The pauses and resumes, in order."""
        return [told for told in self.told if told[0] in ("pause", "resume")]

    def committed(self) -> dict[TopicPartition, int]:
        """The last offset committed for each partition."""
        last: dict[TopicPartition, int] = {}
        for told in self.told:
            if told[0] == "commit":
                last.update(told[1])
        return last


def consumer_of(
    kafka: Kafka, handle: Callable[[Record], Awaitable[None]], *, retry_topic: str | None = None
) -> Consumer:
    unused: Any = None
    consumer = Consumer(
        name="test_service",
        consumer=kafka,  # type: ignore[arg-type]
        producer=unused,
        handlers={"order.event": {}},
        uow_factory=unused,
        store=default_store(),
        dlq_topic="test.dlq",
        retry_topic=retry_topic,
    )

    # Each record goes to `handle` instead of decode, inbox and handler (test_records' concern).
    async def each(record: Record, applied: Container[str]) -> None:
        await handle(record)

    async def none_applied(ids: Sequence[str]) -> set[str]:
        return set()

    consumer._records = SimpleNamespace(  # type: ignore[assignment]
        handle=each, applied_among=none_applied, outages={}
    )
    return consumer


async def test_a_partition_is_paused_while_its_worker_holds_max_pending_and_resumed_below_half(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(group, "MAX_PENDING", 4)
    gate = Gate()
    other = Gate(open=True)

    async def handle(record: Record) -> None:
        await (gate if record.partition == 0 else other)(record)

    kafka = Kafka({TP0: records(TP0, range(4)), TP1: records(TP1, range(3))})
    consumer = consumer_of(kafka, handle)
    running = asyncio.create_task(consumer.run())

    async def polls_later(polls: int = 3) -> None:
        then = kafka.polled
        await eventually(lambda: kafka.polled >= then + polls, f"{polls} more polls", timeout=5)

    await eventually(lambda: kafka.polled >= 1, "the first poll", timeout=5)
    await polls_later()
    assert kafka.moves() == [("pause", TP0)]  # four held; partition 1's three were not enough
    gate.let()  # three held, then two: half of MAX_PENDING is not below it
    await polls_later()
    assert kafka.paused_now == {TP0}
    gate.let()  # one held
    await polls_later()
    assert kafka.moves() == [("pause", TP0), ("resume", TP0)]

    gate.let(2)
    await eventually(lambda: gate.applied == [0, 1, 2, 3], "partition 0 applied", timeout=5)
    consumer.stop()
    await asyncio.wait_for(running, 5)
    assert kafka.committed() == {TP0: 4, TP1: 3}


async def test_applied_offsets_are_committed_while_records_flow() -> None:
    kafka = Kafka({TP0: records(TP0, range(2))})
    consumer = consumer_of(kafka, Gate(open=True))
    running = asyncio.create_task(consumer.run())

    timeout = group.COMMIT_INTERVAL_SECONDS * 4
    await eventually(lambda: kafka.committed() == {TP0: 2}, "offset 2 committed", timeout=timeout)
    consumer.stop()
    await asyncio.wait_for(running, 5)


async def test_a_log_that_ends_below_the_position_is_read_again_from_its_start() -> None:
    gate = Gate()
    kafka = Kafka({TP0: records(TP0, [10, 11])})
    kafka.ends[TP0] = 12
    consumer = consumer_of(kafka, gate)
    running = asyncio.create_task(consumer.run())
    gate.let()
    await eventually(lambda: gate.applied == [10], "offset 10 applied", timeout=5)

    kafka.ends[TP0] = 0  # the broker came back with an empty log
    await eventually(lambda: ("seek", TP0, 0) in kafka.told, "a seek to the start", timeout=5)
    kafka.ends[TP0] = 2
    kafka.polls.append({TP0: records(TP0, [0, 1])})
    gate.let(3)
    await eventually(lambda: len(gate.applied) == 4, "every record applied", timeout=5)
    consumer.stop()
    await asyncio.wait_for(running, 5)

    assert gate.applied == [10, 11, 0, 1]  # what was in hand still counts, in order
    after_the_seek = kafka.told[kafka.told.index(("seek", TP0, 0)) :]
    commits = [told[1][TP0] for told in after_the_seek if told[0] == "commit"]
    assert commits[-1:] == [2]
    assert all(offset <= 2 for offset in commits), "an old log's offset committed on the new"


async def test_a_partitions_lag_is_what_the_log_holds_beyond_what_its_worker_took_up() -> None:
    tp = TopicPartition("payment.event", 2)
    labels = {"consumer": "test_service", "topic": tp.topic, "partition": "2"}

    def lag() -> float | None:
        return REGISTRY.get_sample_value("choreo_consumer_lag_records", labels)

    gate = Gate()
    kafka = Kafka({tp: records(tp, range(4))})
    kafka.ends[tp] = 10
    consumer = consumer_of(kafka, gate)
    running = asyncio.create_task(consumer.run())

    # Fetched up to offset 4 of 10; the worker holds record 0, three wait behind it.
    await eventually(lambda: lag() == 9, "a lag of 6 unfetched + 3 waiting", timeout=5)
    gate.let(4)
    await eventually(lambda: lag() == 6, "a lag of the 6 unfetched", timeout=5)
    kafka.polls.append({tp: records(tp, range(4, 10))})
    gate.let(6)
    await eventually(lambda: lag() == 0, "no lag once every record is applied", timeout=5)

    consumer.stop()
    await asyncio.wait_for(running, 5)
    assert lag() is None, "a member that gave its partitions up still reports their lag"


def test_outages_are_listed_oldest_first_with_how_long_they_have_lasted() -> None:
    consumer = consumer_of(Kafka(), Gate())
    now = time.monotonic()
    consumer._records.outages = {
        "order.event[1]@9": Outage("order.event[1]@9", now - 3.2, "OperationalError: down"),
        "order.event[0]@4": Outage("order.event[0]@4", now - 12.4, "OperationalError: down"),
    }

    assert consumer.outages() == [
        "order.event[0]@4: for 12 s: OperationalError: down",
        "order.event[1]@9: for 3 s: OperationalError: down",
    ]


# --- the retry topic's looks ---------------------------------------------------------------------

RETRY0 = TopicPartition("test.retry", 0)
RETRY1 = TopicPartition("test.retry", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_retry_partitions_rest_between_looks_and_stay_while_they_deliver() -> None:
    clock = Clock()
    looks = group._RetryLooks("test.retry", clock)
    assigned = {TP0, RETRY0, RETRY1}
    assert looks.resting(assigned, {}, idle=False) == set()  # the first look, at the start
    clock.now += group.RETRY_LOOK_SECONDS
    assert looks.resting(assigned, {TP0: []}, idle=False) == {RETRY0, RETRY1}
    clock.now += group.RETRY_LOOK_EVERY_SECONDS - group.RETRY_LOOK_SECONDS
    assert looks.resting(assigned, {}, idle=False) == set()  # the next look
    clock.now += group.RETRY_LOOK_SECONDS * 0.9
    assert looks.resting(assigned, {RETRY1: []}, idle=False) == set()  # a replay: keep looking
    clock.now += group.RETRY_LOOK_SECONDS * 0.9
    assert looks.resting(assigned, {}, idle=False) == set()
    clock.now += group.RETRY_LOOK_SECONDS
    assert looks.resting(assigned, {}, idle=False) == {RETRY0, RETRY1}
    # An idle consumer's fetches outlast a look: its retry partitions stay in them.
    assert looks.resting(assigned, {}, idle=True) == set()


def test_without_a_retry_topic_nothing_rests() -> None:
    clock = Clock()
    looks = group._RetryLooks(None, clock)
    clock.now += 3600
    assert looks.resting({TP0, RETRY0}, {}, idle=False) == set()


async def test_the_poll_loop_pauses_the_retry_partitions_between_looks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(group, "RETRY_LOOK_SECONDS", 0.05)
    monkeypatch.setattr(group, "RETRY_LOOK_EVERY_SECONDS", 0.4)
    kafka = Kafka({TP0: records(TP0, range(1)), RETRY0: records(RETRY0, range(1))})
    consumer = consumer_of(kafka, Gate(open=True), retry_topic="test.retry")
    running = asyncio.create_task(consumer.run())
    await eventually(
        lambda: ("pause", RETRY0) in kafka.moves(), "the retry partition paused", timeout=5
    )
    await eventually(lambda: ("resume", RETRY0) in kafka.moves(), "a look at it", timeout=5)
    await eventually(lambda: kafka.moves().count(("pause", RETRY0)) == 2, "paused again", timeout=5)
    assert all(tp == RETRY0 for _, tp in kafka.moves())  # the event topic is never paused
    consumer.stop()
    await asyncio.wait_for(running, 5)
    assert kafka.committed() == {TP0: 1, RETRY0: 1}
