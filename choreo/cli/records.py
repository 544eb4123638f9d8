"""Kafka records as the inspection commands show them: the Avro value decoded, headers as text,
and a record that does not decode shown raw with the reason, never fatal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord
from rich.text import Text

from choreo.avro import SchemaStore
from choreo.cli.output import json_default, moment
from choreo.errors import ChoreoError

RAW_PREVIEW_BYTES = 48
"""How much of an undecodable value is shown, in hex."""


@dataclass(frozen=True)
class RecordView:
    topic: str
    partition: int
    offset: int
    timestamp: datetime | None
    raw_key: bytes | None
    raw_headers: tuple[tuple[str, bytes | None], ...]
    type: str | None
    """The writer schema's record name, else the `ce_type` header."""
    value: dict[str, Any] | None
    error: str | None
    """Why the value did not decode (None when it did, or when there is no value)."""
    raw: bytes | None

    @property
    def key(self) -> str | None:
        return self.raw_key.decode("utf-8", "replace") if self.raw_key is not None else None

    @property
    def headers(self) -> tuple[tuple[str, str | None], ...]:
        """The headers as text (undecodable bytes replaced; a null header stays None)."""
        return tuple(
            (name, None if raw is None else raw.decode("utf-8", "replace"))
            for name, raw in self.raw_headers
        )

    @property
    def id(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        """The last value of header `name` (Kafka allows repeats; the last one wins)."""
        found = None
        for header_name, value in self.headers:
            if header_name == name:
                found = value
        return found

    @property
    def subject(self) -> str | None:
        return self.header("ce_subject")

    @property
    def is_dead_letter(self) -> bool:
        """On a `*.dlq` topic (a replay on a `*.retry` topic carries `dlq.*` headers too)."""
        return self.topic.endswith(".dlq")

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp.isoformat(timespec="milliseconds")
            if self.timestamp
            else None,
            "key": self.key,
            "type": self.type,
            "headers": dict(self.headers),
            "value": self.value,
        }
        if self.error is not None:
            document["error"] = self.error
            document["raw_hex"] = self.raw_preview
            document["raw_size"] = len(self.raw or b"")
        return document

    @property
    def raw_preview(self) -> str:
        raw = self.raw or b""
        preview = raw[:RAW_PREVIEW_BYTES].hex(" ")
        return preview + (" …" if len(raw) > RAW_PREVIEW_BYTES else "")


def view(record: ConsumerRecord[bytes, bytes], store: SchemaStore) -> RecordView:
    """Decode what can be decoded of `record`; keep the reason for what cannot."""
    raw_headers = tuple(record.headers)
    ce_type = next(
        (
            raw.decode("utf-8", "replace")
            for name, raw in reversed(raw_headers)
            if name == "ce_type" and raw is not None
        ),
        None,
    )
    value: dict[str, Any] | None = None
    error: str | None = None
    record_type = ce_type
    if record.value is not None:
        try:
            record_type, value = store.decode(record.value)
        except ChoreoError as problem:
            error = f"{type(problem).__name__}: {problem}"
    timestamp = (
        datetime.fromtimestamp(record.timestamp / 1000, UTC) if record.timestamp >= 0 else None
    )
    return RecordView(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=timestamp,
        raw_key=record.key,
        raw_headers=raw_headers,
        type=record_type,
        value=value,
        error=error,
        raw=record.value,
    )


def render(record: RecordView) -> Text:
    """A record for people: where and when, its type and key, headers, then the value.

    Print it with `soft_wrap=True`: long header lines are left to the terminal to wrap.
    """
    text = Text.assemble(
        (f"{record.topic}[{record.partition}]@{record.offset}", "bold cyan"),
        f"  {moment(record.timestamp)}  ",
        (record.type or "?", "bold"),
        f"  key={record.key}" if record.key is not None else "  key=∅",
    )
    if record.headers:
        pairs = "  ".join(
            f"{name}={'∅' if value is None else value}" for name, value in record.headers
        )
        text.append(f"\n  {pairs}", style="dim")
    if record.error is not None:
        text.append(f"\n  undecodable: {record.error}", style="red")
        text.append(f"\n  raw ({len(record.raw or b'')} bytes): {record.raw_preview}")
    elif record.value is None:
        text.append("\n  (no value: a tombstone)", style="dim")
    else:
        body = json.dumps(record.value, default=json_default, ensure_ascii=False, indent=2)
        text.append("\n  " + body.replace("\n", "\n  "))
    return text
