"""The event envelope (CloudEvents Kafka binding, binary mode) and the event type registry."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from choreo.avro import SchemaStore
from choreo.errors import PermanentError

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/avro"

# Logical topic of every record type (DESIGN.md §3). Physical names may carry a prefix.
TOPIC_OF_TYPE: Mapping[str, str] = {
    "OrderCreated": "order.create",
    "StockReserved": "stock.updated",
    "StockRejected": "stock.updated",
    "StockReleased": "stock.updated",
    "StockLevelChanged": "stock.updated",
    "LowStockDetected": "stock.updated",
    "PaymentSucceeded": "payment.event",
    "PaymentFailed": "payment.event",
    "PaymentRefunded": "payment.event",
    "OrderConfirmed": "order.event",
    "OrderCancelled": "order.event",
    "UserRegistered": "user.event",
    "UserUpdated": "user.event",
    "UserDeleted": "user.event",
}
EVENT_TOPICS: tuple[str, ...] = tuple(dict.fromkeys(TOPIC_OF_TYPE.values()))
SERVICES_WITH_DLQ: tuple[str, ...] = ("user", "order", "payment", "inventory", "notification")
DLQ_TOPICS: tuple[str, ...] = tuple(f"{service}.dlq" for service in SERVICES_WITH_DLQ)


class EnvelopeError(PermanentError):
    """A record whose headers do not make a Choreo event: it can never be applied."""


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Event:
    """One domain event: its Avro record `type` and `data`, keyed by `subject` (the saga key)."""

    type: str
    subject: str
    data: Mapping[str, Any]
    id: str = field(default_factory=_new_id)
    time: datetime = field(default_factory=_now)
    source: str = ""
    traceparent: str | None = None

    @property
    def topic(self) -> str:
        """The logical topic this event is published on."""
        try:
            return TOPIC_OF_TYPE[self.type]
        except KeyError:
            raise EnvelopeError(f"unknown event type {self.type!r}") from None


def headers_of(event: Event) -> dict[str, str]:
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


def decode_record(
    headers: Sequence[tuple[str, bytes]], value: bytes | None, store: SchemaStore
) -> Event:
    """Rebuild the event a Kafka record carries; raise a non-retriable error when it cannot."""
    text = {name: raw.decode("utf-8", "replace") for name, raw in headers}
    missing = [h for h in ("ce_id", "ce_type", "ce_subject") if not text.get(h)]
    if missing:
        raise EnvelopeError(f"record lacks CloudEvents header(s) {', '.join(missing)}")
    if value is None:
        raise EnvelopeError("record has no value")
    record_name, data = store.decode(value)
    if record_name != text["ce_type"]:
        raise EnvelopeError(
            f"ce_type {text['ce_type']!r} does not match the writer schema {record_name!r}"
        )
    try:
        time = datetime.fromisoformat(text["ce_time"]) if text.get("ce_time") else _now()
    except ValueError:
        raise EnvelopeError(f"ce_time {text['ce_time']!r} is not RFC 3339") from None
    return Event(
        type=record_name,
        subject=text["ce_subject"],
        data=data,
        id=text["ce_id"],
        time=time,
        source=text.get("ce_source", ""),
        traceparent=text.get("traceparent"),
    )
