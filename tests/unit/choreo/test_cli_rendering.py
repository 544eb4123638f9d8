"""How the inspection commands show records, dead letters, lag and a saga's events."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from rich.console import Console
from typer.testing import CliRunner

from choreo.avro import default_store
from choreo.cli import app
from choreo.cli.dead_letters import DeadLetter, Filters
from choreo.cli.output import dumps
from choreo.cli.records import RecordView, render, view
from choreo.cli.saga import Trace, money, print_trace, summary
from choreo.cli.service_views import ServiceView
from choreo.cli.tail import TailRequest
from choreo.cli.topics import PartitionLag, TopicLag, group_lags
from choreo.dead_letters import replay_headers
from choreo.events import Event, headers_of
from choreo.records import OrderCreated, Record
from choreo.testing import records as make

ORDER_ID = "0d6b3c55-4d3f-4a43-9a31-6f3e2b1b5e01"
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def order_created() -> Event[OrderCreated]:
    created = make.order_created(
        order_id=ORDER_ID,
        items=make.order_lines(2),
        deadline=NOW + timedelta(minutes=15),
        created_at=NOW,
    )
    return dataclasses.replace(created, source="/order_service", time=NOW)


def record_of(
    event: Event[Record] | None = None,
    *,
    value: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    topic: str = "order.create",
    offset: int = 7,
    timestamp: datetime = NOW,
) -> ConsumerRecord[bytes, bytes]:
    if event is not None:
        value = default_store().encode(event.type, event.record.to_avro())
        headers = [(k, v.encode()) for k, v in headers_of(event).items()]
    return ConsumerRecord(
        topic=topic,
        partition=1,
        offset=offset,
        timestamp=int(timestamp.timestamp() * 1000),
        timestamp_type=0,
        key=ORDER_ID.encode(),
        value=value,
        checksum=None,
        serialized_key_size=36,
        serialized_value_size=len(value or b""),
        headers=headers or [],
    )


def dead_letter(error_type: str = "UndecodableError", message: str = "not Avro") -> RecordView:
    headers = [
        ("ce_type", b"OrderCreated"),
        ("dlq.original.topic", b"order.create"),
        ("dlq.original.partition", b"1"),
        ("dlq.original.offset", b"7"),
        ("dlq.consumer", b"inventory_service"),
        ("dlq.error.type", error_type.encode()),
        ("dlq.error.message", message.encode()),
        ("dlq.attempts", b"1"),
        ("dlq.failed_at", NOW.isoformat().encode()),
    ]
    record = record_of(value=b"\x00garbage", headers=headers, topic="inventory.dlq", offset=3)
    return view(record, default_store())


def plain(renderable: Any) -> str:
    console = Console(width=300, record=True, color_system=None)
    console.print(renderable, soft_wrap=True)
    return console.export_text()


def test_a_decoded_record_shows_where_when_what_and_its_value_as_json() -> None:
    shown = view(record_of(order_created()), default_store())

    document = json.loads(dumps(shown.to_json()))

    assert (document["topic"], document["partition"], document["offset"]) == ("order.create", 1, 7)
    assert document["timestamp"] == "2026-05-04T12:00:00.000+00:00"
    assert document["type"] == "OrderCreated"
    assert document["key"] == ORDER_ID
    assert document["headers"]["ce_source"] == "/order_service"
    # uuid.UUID and datetime values of the Avro decoder become strings.
    assert document["value"]["order_id"] == ORDER_ID
    assert document["value"]["deadline"] == "2026-05-04T12:15:00+00:00"
    assert "error" not in document
    text = plain(render(shown))
    assert text.splitlines()[0].startswith("order.create[1]@7  2026-05-04T12:00:00.000Z")
    assert "OrderCreated" in text.splitlines()[0]
    assert "ce_source=/order_service" in text
    assert f'"order_id": "{ORDER_ID}"' in text


def test_an_undecodable_record_is_shown_raw_with_the_reason() -> None:
    shown = view(record_of(value=b"\x01\x02not avro", headers=[]), default_store())

    document = shown.to_json()

    assert document["value"] is None
    assert "UndecodableError" in document["error"]
    assert document["raw_hex"].startswith("01 02 6e 6f 74")
    assert document["raw_size"] == 10
    text = plain(render(shown))
    assert "undecodable: UndecodableError" in text
    assert "raw (10 bytes): 01 02 6e" in text


def test_a_long_undecodable_value_is_previewed_not_dumped() -> None:
    shown = view(record_of(value=bytes(500), headers=[]), default_store())

    assert shown.raw_preview.endswith("…")
    assert len(shown.raw_preview.split()) == 48 + 1


def test_a_record_with_an_unknown_writer_schema_keeps_its_ce_type() -> None:
    value = b"\xc3\x01" + bytes(8) + b"\x02"
    shown = view(record_of(value=value, headers=[("ce_type", b"OrderShipped")]), default_store())

    assert shown.type == "OrderShipped"
    assert shown.error is not None
    assert "UnknownSchemaError" in shown.error


def test_a_tombstone_has_no_value_and_no_error() -> None:
    shown = view(record_of(value=None, headers=[("ce_type", b"OrderCreated")]), default_store())

    assert (shown.value, shown.error) == (None, None)
    assert "tombstone" in plain(render(shown))


def test_a_replay_keeps_the_original_headers_byte_for_byte_and_says_where_it_failed() -> None:
    entry = [
        ("ce_id", b"abc"),
        ("odd", b"\xff\xfe"),
        ("null", None),
        ("dlq.original.topic", b"order.create"),
        ("dlq.original.partition", b"2"),
        ("dlq.original.offset", b"7"),
        ("dlq.error.type", b"X"),
        ("dlq.attempts", b"5"),
    ]

    headers = replay_headers(entry, "inventory.dlq:1:3")

    assert headers[:3] == [("ce_id", b"abc"), ("odd", b"\xff\xfe"), ("null", None)]
    carried = dict(headers[3:])
    assert carried.pop("dlq.replayed.at")
    assert carried == {
        "dlq.original.topic": b"order.create",
        "dlq.original.partition": b"2",
        "dlq.original.offset": b"7",
        "dlq.attempts": b"5",
        "dlq.replayed.from": b"inventory.dlq:1:3",
    }


def test_a_dead_letter_summary_reads_its_headers() -> None:
    entry = DeadLetter(dead_letter())

    row = entry.summary()

    assert row["id"] == "inventory.dlq:1:3"
    assert (row["original_topic"], row["original_partition"], row["original_offset"]) == (
        "order.create",
        1,
        7,
    )
    assert (row["consumer"], row["attempts"], row["failed_at"]) == ("inventory_service", 1, NOW)
    assert (row["error_type"], row["error_message"]) == ("UndecodableError", "not Avro")
    assert row["type"] == "OrderCreated"
    assert row["key"] == ORDER_ID


def test_a_failure_time_without_a_zone_is_read_as_utc() -> None:
    record = record_of(value=b"x", headers=[("dlq.failed_at", b"2026-05-04T12:00:00")])

    assert DeadLetter(view(record, default_store())).failed_at == NOW


def test_dead_letter_filters() -> None:
    entry = DeadLetter(dead_letter("TransientError", "database unavailable"))
    later = NOW + timedelta(hours=3)

    assert Filters().matches(entry, later)
    assert Filters(error="DATABASE").matches(entry, later)
    assert Filters(error="transient").matches(entry, later)
    assert not Filters(error="card_declined").matches(entry, later)
    assert Filters(record_type="OrderCreated").matches(entry, later)
    assert not Filters(record_type="OrderCancelled").matches(entry, later)
    assert Filters(since=timedelta(hours=4)).matches(entry, later)
    assert not Filters(since=timedelta(hours=2)).matches(entry, later)


def test_tail_filters_by_key_type_and_age() -> None:
    shown = view(record_of(order_created()), default_store())
    later = NOW + timedelta(minutes=30)

    assert TailRequest("order.create").matches(shown, later)
    assert TailRequest("order.create", key=ORDER_ID).matches(shown, later)
    assert not TailRequest("order.create", key="other").matches(shown, later)
    assert TailRequest("order.create", record_type="OrderCreated").matches(shown, later)
    assert not TailRequest("order.create", record_type="StockReserved").matches(shown, later)
    assert TailRequest("order.create", since=timedelta(hours=1)).matches(shown, later)
    assert not TailRequest("order.create", since=timedelta(minutes=10)).matches(shown, later)


def test_lag_counts_what_a_group_has_not_read() -> None:
    assert PartitionLag(0, committed=3, beginning=0, end=10).lag == 7
    assert PartitionLag(0, committed=10, beginning=0, end=10).lag == 0
    # Nothing committed: every record still held is unread.
    assert PartitionLag(0, committed=None, beginning=4, end=10).lag == 6
    # Committed below what retention kept: only what is still there can be read.
    assert PartitionLag(0, committed=1, beginning=4, end=10).lag == 6


def test_a_committed_offset_beyond_the_log_is_shown_as_ahead_never_as_caught_up() -> None:
    # A broker that came back empty: committed 94 on a log that now ends at 57.
    restarted = PartitionLag(0, committed=94, beginning=0, end=57)

    assert (restarted.lag, restarted.ahead) == (0, 37)
    assert PartitionLag(0, committed=57, beginning=0, end=57).ahead == 0
    topic = TopicLag("payment_service", "stock.updated", (restarted,))
    assert topic.to_json()["ahead_of_log"] == 37


def test_a_service_group_shows_its_topics_before_it_commits_others_only_where_they_did() -> None:
    prefix = "t1."
    created = [TopicPartition("t1.order.create", p) for p in range(2)]
    updated = [TopicPartition("t1.stock.updated", p) for p in range(2)]
    end = {created[0]: 3, created[1]: 2, updated[0]: 5, updated[1]: 0}
    beginning = dict.fromkeys(end, 0)

    nothing_committed = dict.fromkeys(end)
    inventory = group_lags("t1.inventory_service", nothing_committed, beginning, end, prefix)
    assert [(lag.topic, lag.lag, lag.committed) for lag in inventory] == [
        ("t1.order.create", 5, None)
    ]

    committed = {**nothing_committed, updated[0]: 4}
    other = group_lags("t1.audit", committed, beginning, end, prefix)
    assert [(lag.topic, lag.lag, lag.committed) for lag in other] == [("t1.stock.updated", 1, 4)]
    partitions = other[0].to_json()["partitions"]
    assert partitions == [
        {"partition": 0, "committed": 4, "end_offset": 5, "lag": 1, "ahead_of_log": 0},
        {"partition": 1, "committed": None, "end_offset": 0, "lag": 0, "ahead_of_log": 0},
    ]


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [(5000, "USD", "50.00 USD"), (5, "EUR", "0.05 EUR"), (1200, "JPY", "1200 JPY")],
)
def test_money_in_minor_units_reads_as_people_write_it(
    amount: int, currency: str, shown: str
) -> None:
    assert money(amount, currency) == shown


def test_saga_says_when_the_order_status_could_not_be_read_rather_than_unknown() -> None:
    def shown(order_view: ServiceView) -> str:
        console = Console(width=200, record=True, color_system=None)
        print_trace(console, Trace("o-1", ("order.event",), (), (order_view,)))
        return console.export_text().splitlines()[0]

    unreachable = ServiceView("order", "postgresql://postgres@127.0.0.1:1/orders", error="x")
    assert shown(unreachable) == (
        "order o-1  status unknown: the order service's database cannot be read"
    )
    assert shown(ServiceView("order", "postgresql://db/orders")) == (
        "order o-1  unknown to the order service"
    )


def test_saga_summaries_say_what_each_event_means() -> None:
    created = view(record_of(order_created()), default_store())
    assert summary(created) == "1 line(s), total 25.00 USD"

    cancelled = make.order_cancelled(
        order_id=ORDER_ID, reason="PAYMENT_FAILED", previous_status="RESERVED", cancelled_at=NOW
    )
    assert summary(view(record_of(cancelled), default_store())) == "PAYMENT_FAILED (was RESERVED)"
    assert summary(dead_letter()) == (
        "dead letter: UndecodableError after 1 attempt(s) on order.create"
    )


def test_a_replayed_event_says_where_it_came_from() -> None:
    record = record_of(order_created())
    record.headers.append(("dlq.replayed.from", b"inventory.dlq:1:3"))

    assert summary(view(record, default_store())).endswith("(replayed from inventory.dlq:1:3)")


def test_a_replayed_event_with_no_summary_of_its_own_reads_cleanly() -> None:
    """A user event (a welcome e-mail's UserRegistered, replayed from the notification
    service's dead letters) has no summary: the row said ' (replayed from ...)'."""
    record = record_of(make.user_registered())
    record.headers.append(("dlq.replayed.from", b"notification.dlq:4:0"))

    assert summary(view(record, default_store())) == "replayed from notification.dlq:4:0"


@pytest.mark.parametrize(
    ("command", "description"),
    [
        ([], "Run, inspect and repair a Choreo system"),
        (["topics"], "each consumer group's committed offsets and lag per topic"),
        (["tail"], "Print a topic's records, decoded, with headers, partition, offset"),
        (["saga"], "Trace one order through the saga"),
        (["dlq"], "List, show and replay dead letters"),
        (["dlq", "list"], "List the dead letters of every *.dlq topic"),
        (["dlq", "show"], "Show one dead letter: every header and the decoded value"),
        (
            ["dlq", "replay"],
            "Replay dead letters to the consumer that failed them, and to no other",
        ),
    ],
)
def test_every_command_and_group_describes_itself(command: list[str], description: str) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])

    assert result.exit_code == 0, result.output
    assert result.output.strip().startswith(f"Usage: choreo {' '.join(command)}".rstrip())
    assert description in " ".join(result.output.replace("│", " ").split())
