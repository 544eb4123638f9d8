"""The event envelope (CloudEvents Kafka binding, binary mode) and the event type registry."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic

from choreo.avro import SchemaStore
from choreo.dead_letters import dlq_topic, retry_topic
from choreo.errors import PermanentError, RejectedEventError
from choreo.records import RECORDS, R, Record

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/avro"

# Logical topic of every record type (DESIGN.md §3), from the record classes. Physical names
# may carry a prefix.
TOPIC_OF_TYPE: Mapping[str, str] = {name: cls.TOPIC for name, cls in RECORDS.items()}
EVENT_TOPICS: tuple[str, ...] = tuple(dict.fromkeys(TOPIC_OF_TYPE.values()))
# The one service that writes each event topic (its outbox), and so the `ce_source` its records
# carry: a record of that topic from any other source is rejected (docs/architecture.md, trust
# model). Broker ACLs give each service's principal Write on its own topics only.
OWNER_OF_TOPIC: Mapping[str, str] = {
    "order.create": "order",
    "stock.updated": "inventory",
    "payment.event": "payment",
    "order.event": "order",
    "user.event": "user",
}
SERVICES_WITH_DLQ: tuple[str, ...] = ("user", "order", "payment", "inventory", "notification")
DLQ_TOPICS: tuple[str, ...] = tuple(dlq_topic(service) for service in SERVICES_WITH_DLQ)
# Replayed dead letters, each topic read by its own service only (choreo.dead_letters).
RETRY_TOPICS: tuple[str, ...] = tuple(retry_topic(service) for service in SERVICES_WITH_DLQ)
SYSTEM_TOPICS: tuple[str, ...] = EVENT_TOPICS + DLQ_TOPICS + RETRY_TOPICS
"""Every logical topic the services use: what `choreo up` and `choreo topics --create` make."""


def source_of(service: str) -> str:
    """The CloudEvents `source` of a service's events: `/order_service` for `order`."""
    return f"/{service}_service"


def check_source(event: Event[Record]) -> None:
    """Raises `RejectedEventError` unless `event` comes from the service that owns its type."""
    owner = OWNER_OF_TOPIC[event.topic]
    if event.source != source_of(owner):
        given = repr(event.source[:60]) if event.source else "no source"
        raise RejectedEventError(f"{event.type} comes from the {owner} service, not {given}")


class EnvelopeError(PermanentError):
    """A record whose headers do not make a Choreo event: it can never be applied."""


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Event(Generic[R]):
    """One domain event: a typed record (`choreo.records`) in its CloudEvents envelope.

    `type`, `subject` and `topic` come from the record: its class name, its saga key and its
    class's topic. `id` is the CloudEvents `id` (the inbox's key), `time` when it happened (UTC),
    `source` the service that said it (set by the outbox writer), `traceparent` the W3C trace
    context it continues.
    """

    record: R
    id: str = field(default_factory=_new_id)
    time: datetime = field(default_factory=_now)
    source: str = ""
    traceparent: str | None = None

    @property
    def type(self) -> str:
        """The Avro record name, which is the CloudEvents `type` (`OrderCreated`)."""
        return self.record.type_name()

    @property
    def subject(self) -> str:
        """The saga key: the Kafka key and the CloudEvents `subject`."""
        return self.record.subject

    @property
    def topic(self) -> str:
        """The logical topic this event is published on."""
        return self.record.TOPIC


def headers_of(event: Event[Record]) -> dict[str, str]:
    """The CloudEvents binary-mode headers of `event` (all values are text)."""
    headers = {
        "ce_specversion": SPEC_VERSION,
        "ce_id": event.id,
        "ce_type": event.type,
        "ce_source": event.source,
        "ce_time": event.time.astimezone(UTC).isoformat(timespec="milliseconds"),
        "ce_subject": event.subject,
        "content-type": CONTENT_TYPE,
    }
    if event.traceparent:
        headers["traceparent"] = event.traceparent
    return headers


# CloudEvents attributes a record must carry once each, as text, to be an event at all.
_REQUIRED_HEADERS = ("ce_specversion", "ce_id", "ce_type", "ce_subject")
_ENVELOPE_HEADERS = (*_REQUIRED_HEADERS, "ce_source", "ce_time", "traceparent")
_MAX_KEY_LENGTH = 200
"""Longest `ce_id` and `ce_subject` accepted: they are keys of the inbox and of the saga
(CloudEvents §3.1.1 sets no limit; a UUID is 36 characters)."""
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def decode_record(
    headers: Sequence[tuple[str, bytes | None]], value: bytes | None, store: SchemaStore
) -> Event[Record]:
    """Rebuild the event a Kafka record carries.

    `headers` as aiokafka gives them (a value may be None, a name may repeat). Raises a
    non-retriable `choreo.errors.ChoreoError` (EnvelopeError, or the codec's AvroError) for any
    record that is not one event: a CloudEvents header missing, repeated, null, not UTF-8 or
    malformed; no value; a value that is not a stored schema's single-object encoding; a
    `ce_type` that is not the writer schema's record. A malformed `traceparent` is dropped, as
    W3C Trace Context §4.3 asks, instead of failing the record.
    """
    text = _envelope_headers(headers)
    missing = [name for name in _REQUIRED_HEADERS if not text.get(name)]
    if missing:
        raise EnvelopeError(f"record lacks CloudEvents header(s) {', '.join(missing)}")
    if text["ce_specversion"] != SPEC_VERSION:
        raise EnvelopeError(
            f"ce_specversion {text['ce_specversion']!r} is not {SPEC_VERSION!r}"[:300]
        )
    for name in ("ce_id", "ce_subject"):
        if len(text[name]) > _MAX_KEY_LENGTH or not text[name].isprintable():
            raise EnvelopeError(
                f"{name} must be printable text of at most {_MAX_KEY_LENGTH} characters"
            )
    if not value:
        raise EnvelopeError("record has no value")
    record_name, datum = store.decode(value)
    if record_name != text["ce_type"]:
        raise EnvelopeError(
            f"ce_type {text['ce_type']!r} does not match the writer schema {record_name!r}"[:300]
        )
    record_class = RECORDS.get(record_name)
    if record_class is None:
        raise EnvelopeError(f"{record_name} is a stored schema with no record class")
    traceparent = text.get("traceparent")
    record: Record = record_class.from_avro(datum)
    return Event(
        record=record,
        id=text["ce_id"],
        time=_event_time(text.get("ce_time")),
        source=text.get("ce_source", ""),
        traceparent=traceparent if traceparent and _TRACEPARENT.fullmatch(traceparent) else None,
    )


def event_id_of(headers: Sequence[tuple[str, bytes | None]]) -> str | None:
    """The `ce_id` a record's headers carry once, as text; None when it has none, more than
    one, a null one or one that is not UTF-8 (decoding such a record fails: `decode_record`)."""
    found: str | None = None
    for name, raw in headers:
        if name != "ce_id":
            continue
        if found is not None or raw is None:
            return None
        try:
            found = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return found


def _envelope_headers(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, str]:
    """The envelope's headers as text; the others are not the envelope's business."""
    text: dict[str, str] = {}
    for name, raw in headers:
        if name not in _ENVELOPE_HEADERS:
            continue
        if name in text:
            # Two ids (or types...) for one record: which one to trust is anyone's guess.
            raise EnvelopeError(f"header {name} appears more than once")
        if raw is None:
            raise EnvelopeError(f"header {name} is null")
        try:
            text[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise EnvelopeError(f"header {name} is not UTF-8 text") from None
    return text


def _event_time(text: str | None) -> datetime:
    """`ce_time` (RFC 3339) as an aware UTC datetime; now when the record has none."""
    if not text:
        return _now()
    try:
        time = datetime.fromisoformat(text)
        return time.replace(tzinfo=UTC) if time.tzinfo is None else time.astimezone(UTC)
    except (ValueError, OverflowError):
        raise EnvelopeError(f"ce_time {text[:100]!r} is not an RFC 3339 time") from None
