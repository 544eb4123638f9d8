"""Dead letters and their replays: the records of `<service>.dlq` and `<service>.retry`.

A consumer that cannot apply a record parks it in its own dead-letter topic: the original key,
value and headers (byte for byte, a null header stays null), then the `dlq.*` headers of
DESIGN.md §3 (the Kafka Connect / Spring convention). `choreo dlq replay` sends an entry to the
retry topic of the consumer that failed it and to no other: the original record again, its own
headers without the `dlq.*` ones, then where it first failed, how often it was tried and which
entry it replays. The consumer applies a retry record with the handlers of the topic it first
failed on; if it fails again, the new entry keeps the first origin and adds up the attempts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from choreo.errors import PermanentError

Headers = Sequence[tuple[str, bytes | None]]

PREFIX = "dlq."
ORIGINAL_TOPIC = "dlq.original.topic"
ORIGINAL_PARTITION = "dlq.original.partition"
ORIGINAL_OFFSET = "dlq.original.offset"
CONSUMER = "dlq.consumer"
ERROR_TYPE = "dlq.error.type"
ERROR_MESSAGE = "dlq.error.message"
ATTEMPTS = "dlq.attempts"
FAILED_AT = "dlq.failed_at"
REPLAYED_FROM = "dlq.replayed.from"
"""On a retry record: the entry it replays. On a dead letter: the entry whose replay failed."""
REPLAYED_AT = "dlq.replayed.at"
VALUE_DROPPED = "dlq.value.dropped"
"""Set, with the value's size, on the rare entry whose value the broker refused to take twice."""

_ERROR_MESSAGE_LENGTH = 1000


class ReplayError(PermanentError):
    """A record on a retry topic that does not say where it first failed."""


def dlq_topic(service: str) -> str:
    """`payment` → `payment.dlq`: where the service parks what it cannot apply."""
    return f"{service}.dlq"


def retry_topic(service: str) -> str:
    """`payment` → `payment.retry`: replays for this service's consumer only."""
    return f"{service}.retry"


def retry_topic_of(dead_letter_topic: str) -> str:
    """The retry topic beside a dead-letter topic, prefix kept: `t1.payment.dlq` →
    `t1.payment.retry`. Raises ValueError for a name that does not end in `.dlq`."""
    if not dead_letter_topic.endswith(".dlq"):
        raise ValueError(f"{dead_letter_topic!r} is not a dead-letter topic (*.dlq)")
    return dead_letter_topic.removesuffix(".dlq") + ".retry"


@dataclass(frozen=True)
class Origin:
    """Where a record was first read, how many attempts it has had, and (for a replay) which
    dead letter it replays."""

    topic: str
    partition: int
    offset: int
    attempts: int = 0
    replayed_from: str | None = None


def replayed_origin(headers: Headers) -> Origin:
    """The origin a retry record carries; ReplayError when its `dlq.*` headers do not say."""
    text = _last_text(headers)
    topic, partition, offset = (
        text.get(h) for h in (ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET)
    )
    if not topic or not partition or not offset or not partition.isdigit() or not offset.isdigit():
        raise ReplayError(
            f"a retry record needs {ORIGINAL_TOPIC}, {ORIGINAL_PARTITION} and {ORIGINAL_OFFSET}"
        )
    attempts = text.get(ATTEMPTS, "0")
    return Origin(
        topic=topic,
        partition=int(partition),
        offset=int(offset),
        attempts=int(attempts) if attempts.isdigit() else 0,
        replayed_from=text.get(REPLAYED_FROM),
    )


def own_headers(headers: Headers) -> list[tuple[str, bytes | None]]:
    """The headers without the `dlq.*` ones: what the record carried before it failed."""
    return [(name, value) for name, value in headers if not name.startswith(PREFIX)]


def dead_letter_headers(
    headers: Headers,
    origin: Origin,
    *,
    consumer: str,
    error: BaseException,
    attempts: int,
    value_dropped: int | None = None,
) -> list[tuple[str, bytes | None]]:
    """The headers of a dead letter: the record's own, then DESIGN.md §3's `dlq.*` ones.

    A first failure keeps every header the record had, byte for byte (readers take the last
    of a repeated header, so a record's own `dlq.*` headers cannot pose as ours); a replay's
    failure keeps the record's own headers and the first origin, and adds up the attempts.
    """
    kept = list(headers) if origin.replayed_from is None else own_headers(headers)
    values = {
        ORIGINAL_TOPIC: origin.topic,
        ORIGINAL_PARTITION: str(origin.partition),
        ORIGINAL_OFFSET: str(origin.offset),
        CONSUMER: consumer,
        ERROR_TYPE: type(error).__name__,
        ERROR_MESSAGE: str(error)[:_ERROR_MESSAGE_LENGTH],
        ATTEMPTS: str(origin.attempts + attempts),
        FAILED_AT: datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    if origin.replayed_from is not None:
        values[REPLAYED_FROM] = origin.replayed_from
    if value_dropped is not None:
        values[VALUE_DROPPED] = f"{value_dropped} bytes"
    return [*kept, *((name, value.encode()) for name, value in values.items())]


def replay_headers(headers: Headers, entry_id: str) -> list[tuple[str, bytes | None]]:
    """The headers of a retry record for dead letter `entry_id` that carries `headers`."""
    text = _last_text(headers)
    carried = {
        name: text[name]
        for name in (ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET, ATTEMPTS)
        if name in text
    }
    carried[REPLAYED_FROM] = entry_id
    carried[REPLAYED_AT] = datetime.now(UTC).isoformat(timespec="milliseconds")
    return [*own_headers(headers), *((name, value.encode()) for name, value in carried.items())]


def _last_text(headers: Headers) -> dict[str, str]:
    """The `dlq.*` headers as text, the last of each name winning (Kafka's `lastHeader`)."""
    return {
        name: value.decode("utf-8", "replace")
        for name, value in headers
        if name.startswith(PREFIX) and value is not None
    }
