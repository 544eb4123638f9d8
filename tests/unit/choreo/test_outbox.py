"""The outbox's pure parts (choreo.outbox): the row a record becomes, which rows of a batch the
relay may mark published, and how it tells that the broker lost its log."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import RecordMetadata
from hypothesis import given
from hypothesis import strategies as st

from choreo.avro import default_store
from choreo.events import decode_record
from choreo.outbox import OutboxWriter, Relay, _acknowledged_prefixes, _Row, relay_lock_key
from choreo.records import OrderCreated
from choreo.signing import SIGNATURE_HEADER, generate_keys
from choreo.testing import records as make

STORE = default_store()
SIGNERS, KEYS = generate_keys()


def wire_headers(headers: object) -> list[tuple[str, bytes | None]]:
    """A row's headers (jsonb text) as the relay sends them and aiokafka hands them back."""
    assert isinstance(headers, dict)
    return [(name, value.encode()) for name, value in headers.items()]


def test_a_record_becomes_a_row_on_its_topic_keyed_by_its_subject() -> None:
    writer = OutboxWriter(STORE, "/order_service", topic_name=lambda topic: f"t1.{topic}")
    created = make.order_created(user_id="7d4b1a52-0d7e-4a43-9b0f-5a7f3c2e9d11")

    row = writer.row(created)

    assert (row["topic"], row["key"]) == ("t1.order.create", created.record.order_id)
    assert row["headers"] == {
        "ce_specversion": "1.0",
        "ce_id": created.id,
        "ce_type": "OrderCreated",
        "ce_source": "/order_service",
        "ce_time": created.time.isoformat(timespec="milliseconds"),
        "ce_subject": created.record.order_id,
        "content-type": "application/avro",
    }
    assert isinstance(row["value"], bytes)
    name, datum = STORE.decode(row["value"])
    assert (name, OrderCreated.from_avro(datum)) == ("OrderCreated", created.record)


def test_a_catalog_record_is_keyed_by_its_product() -> None:
    level = make.stock_level_changed()

    row = OutboxWriter(STORE, "/inventory_service").row(level)

    assert (row["topic"], row["key"]) == ("stock.updated", level.record.product_id)


def test_a_row_read_back_is_the_event_that_was_written() -> None:
    event = dataclasses.replace(
        make.payment_refunded(),
        time=datetime(2026, 3, 1, 12, 30, 5, 123000, tzinfo=UTC),  # what ce_time keeps: ms
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )

    row = OutboxWriter(STORE, "/payment_service").row(event)
    value = row["value"]
    assert isinstance(value, bytes)

    read = decode_record(wire_headers(row["headers"]), value, STORE)
    assert read == dataclasses.replace(event, source="/payment_service")


def test_an_event_that_names_its_source_keeps_it() -> None:
    event = dataclasses.replace(make.user_deleted(), source="/user_service")

    row = OutboxWriter(STORE, "/somewhere_else").row(event)

    assert isinstance(row["headers"], dict)
    assert row["headers"]["ce_source"] == "/user_service"


def test_a_signed_row_verifies_under_its_logical_topic_whatever_the_prefix() -> None:
    writer = OutboxWriter(STORE, "/payment_service", lambda t: f"t9.{t}", SIGNERS["payment"])
    row = writer.row(make.payment_succeeded())
    value = row["value"]
    assert isinstance(value, bytes)
    headers = wire_headers(row["headers"])

    KEYS.verify("payment.event", headers, value)  # raises unless the payment key signed it
    assert [name for name, _ in headers].count(SIGNATURE_HEADER) == 1
    unsigned = OutboxWriter(STORE, "/payment_service").row(make.payment_succeeded())
    assert isinstance(unsigned["headers"], dict)
    assert SIGNATURE_HEADER not in unsigned["headers"]


# --- which rows of a batch may be marked published ---------------------------------------------


def outbox_row(id: int, key: str, topic: str = "order.event") -> _Row:
    return _Row(id=id, topic=topic, key=key, value=b"", headers={})


def ack(offset: int = 0, topic: str = "order.event", partition: int = 0) -> RecordMetadata:
    return RecordMetadata(topic, partition, TopicPartition(topic, partition), offset, -1, 0, 0)


REFUSED = ConnectionError("the broker refused the batch")


def test_a_batch_acknowledged_whole_is_marked_whole_in_id_order() -> None:
    rows = [outbox_row(1, "a"), outbox_row(2, "b"), outbox_row(3, "a")]

    assert _acknowledged_prefixes(rows, [ack(0), ack(1), ack(2)]) == [1, 2, 3]


def test_after_a_keys_first_failure_none_of_its_later_rows_is_marked() -> None:
    rows = [outbox_row(id, key) for id, key in enumerate("aabab", start=1)]
    results: list[object] = [ack(0), REFUSED, ack(1), ack(2), ack(3)]

    # Row 4 was acknowledged, but marking it would publish a's events out of order once row 2
    # is sent again; b is another key and goes on.
    assert _acknowledged_prefixes(rows, results) == [1, 3, 5]


def test_the_same_key_on_another_topic_is_another_stream() -> None:
    rows = [outbox_row(1, "a", "order.event"), outbox_row(2, "a", "order.create")]

    assert _acknowledged_prefixes(rows, [REFUSED, ack(0, "order.create")]) == [2]


@given(
    batch=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.booleans()), min_size=0, max_size=30
    )
)
def test_each_key_is_marked_up_to_its_first_failure_and_no_further(
    batch: list[tuple[str, bool]],
) -> None:
    rows = [outbox_row(i, key) for i, (key, _) in enumerate(batch, start=1)]
    results: list[object] = [ack(i) if ok else REFUSED for i, (_, ok) in enumerate(batch)]

    marked = _acknowledged_prefixes(rows, results)

    assert marked == sorted(marked)
    for key in {"a", "b", "c"}:
        outcomes = [(r.id, ok) for r, (k, ok) in zip(rows, batch, strict=True) if k == key]
        failed_at = next((n for n, (_, ok) in enumerate(outcomes) if not ok), len(outcomes))
        assert [i for i in marked if rows[i - 1].key == key] == [i for i, _ in outcomes[:failed_at]]


# --- the broker lost its log --------------------------------------------------------------------


def relay() -> Relay:
    producer: Any = None  # never used: _log_lost only reads the acknowledgements
    return Relay("postgresql://unused/outbox", producer)


def test_offsets_that_keep_growing_are_a_log_that_kept_its_records() -> None:
    watcher = relay()

    assert watcher._log_lost([ack(0), ack(1), ack(0, partition=1)]) is False
    assert watcher._log_lost([ack(2), ack(1, partition=1)]) is False


def test_an_offset_at_or_below_one_acknowledged_before_is_a_lost_log() -> None:
    watcher = relay()
    watcher._log_lost([ack(5), ack(9, partition=1)])

    assert watcher._log_lost([ack(5)]) is True


def test_after_a_loss_what_was_known_of_the_old_logs_is_forgotten() -> None:
    watcher = relay()
    watcher._log_lost([ack(5), ack(9, partition=1)])
    watcher._log_lost([ack(0)])  # partition 0 came back empty: so did the broker

    # Partition 1 starting again from 0 is no second loss: the first one already refills it.
    assert watcher._log_lost([ack(0, partition=1), ack(1)]) is False
    # What is acknowledged from then on is remembered again.
    assert watcher._log_lost([ack(0, partition=1)]) is True


def test_the_relay_lock_key_is_the_same_in_every_process_and_release() -> None:
    # Relays of two releases, running side by side in a rolling deploy, must elect one.
    assert relay_lock_key("orders") == 3533427417
    assert relay_lock_key("orders") != relay_lock_key("payments")
