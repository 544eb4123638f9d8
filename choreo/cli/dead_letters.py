"""Dead letters: the records a consumer parked in its `<service>.dlq` topic, read through their
`dlq.*` headers (DESIGN.md §3), found, filtered and republished where they failed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import TopicPartition

from choreo.avro import default_store
from choreo.cli.broker import Broker
from choreo.cli.options import EntryId
from choreo.cli.output import CliError, advance, progress
from choreo.cli.records import RecordView, original_headers, view

REPLAYED_FROM = "dlq.replayed.from"
REPLAYED_AT = "dlq.replayed.at"


@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter topic, read through its `dlq.*` headers."""

    record: RecordView

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def original_topic(self) -> str | None:
        return self.record.header("dlq.original.topic")

    @property
    def failed_at(self) -> datetime | None:
        text = self.record.header("dlq.failed_at")
        try:
            failed_at = datetime.fromisoformat(text) if text else None
        except ValueError:
            failed_at = None
        if failed_at is None:
            return self.record.timestamp
        return failed_at if failed_at.tzinfo else failed_at.replace(tzinfo=UTC)

    @property
    def error_type(self) -> str | None:
        return self.record.header("dlq.error.type")

    @property
    def error_message(self) -> str | None:
        return self.record.header("dlq.error.message")

    def summary(self) -> dict[str, Any]:
        header = self.record.header
        attempts = header("dlq.attempts")
        partition, offset = header("dlq.original.partition"), header("dlq.original.offset")
        return {
            "id": self.id,
            "topic": self.record.topic,
            "partition": self.record.partition,
            "offset": self.record.offset,
            "original_topic": self.original_topic,
            "original_partition": int(partition) if partition and partition.isdigit() else None,
            "original_offset": int(offset) if offset and offset.isdigit() else None,
            "consumer": header("dlq.consumer"),
            "type": self.record.type,
            "key": self.record.key,
            "event_id": header("ce_id"),
            "error_type": self.error_type,
            "error_message": self.error_message,
            "attempts": int(attempts) if attempts and attempts.isdigit() else None,
            "failed_at": self.failed_at,
        }


@dataclass(frozen=True)
class Filters:
    since: timedelta | None = None
    record_type: str | None = None
    error: str | None = None

    def matches(self, entry: DeadLetter, now: datetime) -> bool:
        if self.record_type is not None and entry.record.type != self.record_type:
            return False
        if self.error is not None:
            said = f"{entry.error_type or ''}: {entry.error_message or ''}".lower()
            if self.error.lower() not in said:
                return False
        if self.since is not None:
            failed_at = entry.failed_at
            return failed_at is not None and failed_at >= now - self.since
        return True


def dead_letter_topics(broker: Broker, topic: str | None) -> list[str]:
    """The *.dlq topics to read: `topic` (with or without `.dlq`) or all under the prefix."""
    if topic is None:
        return [name for name in broker.topics() if name.endswith(".dlq")]
    name = topic if topic.endswith(".dlq") else f"{topic}.dlq"
    return [broker.require_topic(name)]


async def scan(
    broker: Broker, topics: Sequence[str], *, show_progress: bool = False
) -> list[DeadLetter]:
    """Every record of `topics`, as dead letters, oldest first."""
    store = default_store()
    beginning, end = await broker.offsets(broker.partitions(*topics))
    total = sum(end[tp] - beginning[tp] for tp in end)
    entries = []
    with progress("reading dead letters", total, enabled=show_progress) as bar:
        async for record in broker.read(beginning, end):
            entries.append(DeadLetter(view(record, store)))
            advance(bar)
    return entries


async def fetch(broker: Broker, wanted: Sequence[EntryId]) -> list[DeadLetter]:
    """The entries `wanted`, all of them, or CliError naming the first that does not exist."""
    store = default_store()
    found: list[DeadLetter] = []
    for entry_id in wanted:
        record = await broker.record_at(
            TopicPartition(entry_id.topic, entry_id.partition), entry_id.offset
        )
        if record is None:
            raise CliError(f"no dead letter {entry_id}; `choreo dlq list` lists them")
        found.append(DeadLetter(view(record, store)))
    return found


async def republish(
    broker: Broker, entries: Sequence[DeadLetter]
) -> AsyncIterator[tuple[int, int]]:
    """Send each entry's original record back to its original topic; yield where it landed
    (partition, offset), in the order of `entries`.

    Same key and value, the original headers without the `dlq.*` ones, plus where it was
    replayed from and when.
    """
    async with broker.producer() as producer:
        for entry in entries:
            headers = [
                *original_headers(entry.record),
                (REPLAYED_FROM, entry.id.encode()),
                (REPLAYED_AT, datetime.now(UTC).isoformat(timespec="milliseconds").encode()),
            ]
            sent = await producer.send_and_wait(
                entry.original_topic,
                value=entry.record.raw,
                key=entry.record.raw_key,
                headers=headers,
            )
            yield sent.partition, sent.offset
