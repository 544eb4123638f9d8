"""Dead letters: the records a consumer parked in its `<service>.dlq` topic, read through their
`dlq.*` headers (DESIGN.md §3), found, filtered, judged and replayed to the consumer that
failed them (its `<service>.retry` topic, `choreo.dead_letters`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from aiokafka import TopicPartition

from choreo import kafka
from choreo.avro import SchemaStore, default_store
from choreo.cli.broker import Broker
from choreo.cli.options import EntryId
from choreo.cli.output import CliError, advance, progress
from choreo.cli.records import RecordView, view
from choreo.db import sync_dsn
from choreo.dead_letters import REPLAYED_FROM, own_headers, replay_headers, retry_topic_of
from choreo.errors import ChoreoError, RejectedEventError
from choreo.events import check_source, decode_record
from choreo.signing import EventKeyError, EventKeys

CONNECT_TIMEOUT = 5
"""Seconds to reach a service's database to look at its inbox."""


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
    def consumer(self) -> str | None:
        return self.record.header("dlq.consumer")

    @property
    def retry_topic(self) -> str:
        """Where a replay goes: the retry topic only the failing service reads."""
        return retry_topic_of(self.record.topic)

    @property
    def service(self) -> str:
        """The service whose consumer failed it: `payment` for `t1.payment.dlq`."""
        return self.record.topic.removesuffix(".dlq").rsplit(".", 1)[-1]

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


async def replays(broker: Broker, entries: Sequence[DeadLetter]) -> dict[str, list[str]]:
    """Entry id -> the ids of the retry records that replayed it so far (oldest first)."""
    wanted = {entry.id for entry in entries}
    retry_topics = sorted({entry.retry_topic for entry in entries} & set(broker.topics()))
    found: dict[str, list[str]] = {entry_id: [] for entry_id in wanted}
    if not retry_topics:
        return found
    beginning, end = await broker.offsets(broker.partitions(*retry_topics))
    async for record in broker.read(beginning, end):
        replayed = next((v for k, v in reversed(record.headers) if k == REPLAYED_FROM), None)
        if replayed is not None and (entry_id := replayed.decode("utf-8", "replace")) in wanted:
            found[entry_id].append(f"{record.topic}:{record.partition}:{record.offset}")
    return found


async def expected_outcomes(
    entries: Sequence[DeadLetter], database_urls: Mapping[str, str]
) -> dict[str, str]:
    """Entry id -> what its consumer would do with a replay now, in words: `apply`, `skip:
    already applied` (its inbox holds the event id), `fail: <why>` (the record does not
    decode, or would be rejected again: a `ce_source` or signature that is not its owner's),
    or `unknown: <why>` (the service's database cannot be asked)."""
    store = default_store()
    keys = _event_keys()
    outcomes: dict[str, str] = {}
    pending: dict[str, list[tuple[DeadLetter, str]]] = {}
    for entry in entries:
        event_id = _decodes(entry, store, keys)
        if event_id.startswith("fail:"):
            outcomes[entry.id] = event_id
        else:
            pending.setdefault(entry.service, []).append((entry, event_id))
    for service, waiting in pending.items():
        url = database_urls.get(service)
        try:
            if url is None:
                raise CliError(f"no database URL for the {service} service")
            applied = await _applied(url, waiting)
        except (CliError, psycopg.Error, OSError, TimeoutError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else "no answer"
            outcomes.update({e.id: f"unknown: {reason}" for e, _ in waiting})
            continue
        for entry, event_id in waiting:
            applied_here = (entry.consumer or f"{service}_service", event_id) in applied
            outcomes[entry.id] = "skip: already applied" if applied_here else "apply"
    return outcomes


def _decodes(entry: DeadLetter, store: SchemaStore, keys: EventKeys | None) -> str:
    """The entry's event id, or `fail: <why>` when its consumer could not decode it either or
    would reject it again (choreo.signing): checked with `keys` when the operator has them,
    else a record rejected once is taken to be rejected again (a source or signature does not
    change on replay)."""
    headers = own_headers(entry.record.raw_headers)
    try:
        event = decode_record(headers, entry.record.raw, store)
        check_source(event)
        if keys is not None:
            keys.verify(event.topic, headers, entry.record.raw)
    except ChoreoError as error:
        return f"fail: {type(error).__name__}: {error}"
    if keys is None and entry.error_type == RejectedEventError.__name__:
        return "fail: rejected when it was read (set CHOREO_EVENT_KEYS to check its signature)"
    return event.id


def _event_keys() -> EventKeys | None:
    """The publishers' public keys from CHOREO_EVENT_KEYS, as the services read them."""
    document = os.environ.get("CHOREO_EVENT_KEYS")
    if not document:
        return None
    try:
        return EventKeys.from_json(document)
    except EventKeyError as error:
        raise CliError(str(error)) from None


async def _applied(
    database_url: str, waiting: Sequence[tuple[DeadLetter, str]]
) -> set[tuple[str, str]]:
    """The (consumer, event id) pairs of `waiting` a service's inbox holds."""
    async with asyncio.timeout(CONNECT_TIMEOUT * 2):
        connection = await psycopg.AsyncConnection.connect(
            sync_dsn(database_url), autocommit=True, connect_timeout=CONNECT_TIMEOUT
        )
    async with connection, connection.cursor() as cursor:
        await cursor.execute(
            "SELECT consumer, event_id FROM inbox WHERE event_id = ANY(%s)",
            (sorted({event_id for _, event_id in waiting}),),
        )
        return {(consumer, event_id) for consumer, event_id in await cursor.fetchall()}


async def republish(
    broker: Broker, entries: Sequence[DeadLetter]
) -> AsyncIterator[tuple[int, int]]:
    """Send each entry's original record to the retry topic of the service that failed it;
    yield where it landed (partition, offset), in the order of `entries`.

    Same key and value, the original headers without the `dlq.*` ones, then where it first
    failed, its attempts so far, and which entry it replays (`choreo.dead_letters`).
    """
    async with broker.producer() as producer:
        for entry in entries:
            sent = await kafka.send_record(
                producer,
                entry.retry_topic,
                key=entry.record.raw_key,
                value=entry.record.raw,
                headers=replay_headers(entry.record.raw_headers, entry.id),
            )
            yield sent.partition, sent.offset
