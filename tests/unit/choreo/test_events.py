"""The event envelope (choreo.events): each typed record's type, subject, topic and headers, the
round trip through the wire, and any bytes a record can hold decode to an event or a kit error."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from choreo.avro import default_store
from choreo.errors import ChoreoError, RejectedEventError
from choreo.events import (
    OWNER_OF_TOPIC,
    TOPIC_OF_TYPE,
    EnvelopeError,
    Event,
    check_source,
    decode_record,
    headers_of,
    source_of,
)
from choreo.records import RECORDS, Record
from choreo.testing import records as make
from tests.poison import RawRecord, poison_records, valid_event, wire

STORE = default_store()


@settings(max_examples=400)
@given(record=poison_records(str(uuid.uuid4())))
def test_every_poison_record_raises_a_permanent_kit_error(record: RawRecord) -> None:
    with pytest.raises(ChoreoError) as raised:
        decode_record(record.headers, record.value, STORE)
    assert raised.value.retriable is False, record.defects


@settings(max_examples=400)
@given(
    headers=st.lists(
        st.tuples(
            st.one_of(st.sampled_from(["ce_id", "ce_type", "ce_subject", "ce_time"]), st.text()),
            st.one_of(st.none(), st.binary(max_size=40)),
        ),
        max_size=8,
    ),
    value=st.one_of(
        st.none(), st.binary(max_size=80), st.binary(max_size=40).map(lambda b: b"\xc3\x01" + b)
    ),
)
def test_any_bytes_decode_or_raise_only_kit_errors(
    headers: list[tuple[str, bytes | None]], value: bytes | None
) -> None:
    with contextlib.suppress(ChoreoError):  # anything else fails the test
        decode_record(headers, value, STORE)


def test_a_null_header_of_another_name_does_not_spoil_a_valid_event() -> None:
    event = valid_event(str(uuid.uuid4()), 3)
    value, headers = wire(event)

    decoded = decode_record([*headers, ("x-note", None), ("x-bin", b"\xff")], value, STORE)

    assert (decoded.id, decoded.type, decoded.record.available) == (event.id, event.type, 3)


@pytest.mark.parametrize(
    ("header", "replacement", "said"),
    [
        ("ce_id", None, "header ce_id is null"),
        ("ce_type", b"\xff", "header ce_type is not UTF-8 text"),
        ("ce_specversion", b"0.3", "ce_specversion '0.3' is not '1.0'"),
        ("ce_time", b"soon", "ce_time 'soon' is not an RFC 3339 time"),
    ],
)
def test_a_broken_cloudevents_header_is_named_in_the_error(
    header: str, replacement: bytes | None, said: str
) -> None:
    value, headers = wire(valid_event(str(uuid.uuid4()), 1))
    broken = [(n, replacement if n == header else v) for n, v in headers]

    with pytest.raises(EnvelopeError, match=said):
        decode_record(broken, value, STORE)


def test_a_repeated_event_id_is_refused_rather_than_guessed() -> None:
    value, headers = wire(valid_event(str(uuid.uuid4()), 1))

    with pytest.raises(EnvelopeError, match="ce_id appears more than once"):
        decode_record([*headers, ("ce_id", str(uuid.uuid4()).encode())], value, STORE)


def test_a_malformed_traceparent_is_dropped_not_fatal() -> None:
    value, headers = wire(valid_event(str(uuid.uuid4()), 1))

    decoded = decode_record([*headers, ("traceparent", b"not-a-trace")], value, STORE)

    assert decoded.traceparent is None


def test_a_time_without_a_zone_is_utc() -> None:
    value, headers = wire(valid_event(str(uuid.uuid4()), 1))
    headers = [(n, b"2026-11-30T10:00:00" if n == "ce_time" else v) for n, v in headers]

    decoded = decode_record(headers, value, STORE)

    assert decoded.time.isoformat() == "2026-11-30T10:00:00+00:00"


# --- the envelope of a typed record -------------------------------------------------------------

# DESIGN.md §3: each record's topic, and the field its key (and ce_subject) is; the account
# events of user.event are keyed by the user.
ON_THE_WIRE = {
    "OrderCreated": ("order.create", "order_id"),
    "StockReserved": ("stock.updated", "order_id"),
    "StockRejected": ("stock.updated", "order_id"),
    "StockReleased": ("stock.updated", "order_id"),
    "StockLevelChanged": ("stock.updated", "product_id"),
    "LowStockDetected": ("stock.updated", "product_id"),
    "PaymentSucceeded": ("payment.event", "order_id"),
    "PaymentFailed": ("payment.event", "order_id"),
    "PaymentRefunded": ("payment.event", "order_id"),
    "RiskAssessed": ("payment.event", "order_id"),
    "PaymentActionRequired": ("payment.event", "order_id"),
    "OrderConfirmed": ("order.event", "order_id"),
    "OrderCancelled": ("order.event", "order_id"),
    "UserRegistered": ("user.event", "user_id"),
    "UserUpdated": ("user.event", "user_id"),
    "UserDeleted": ("user.event", "user_id"),
    "PasswordResetRequested": ("user.event", "user_id"),
    "SessionsRevoked": ("user.event", "user_id"),
    "NotificationPreferencesChanged": ("user.event", "user_id"),
}


def factory(name: str) -> Callable[[], Event[Record]]:
    """`choreo.testing.records`' factory of record `name` (`order_created` for OrderCreated)."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    made: Callable[[], Event[Record]] = getattr(make, snake)
    return made


def test_every_record_has_its_place_on_the_wire() -> None:
    assert set(ON_THE_WIRE) == set(RECORDS)
    assert {name: topic for name, (topic, _) in ON_THE_WIRE.items()} == TOPIC_OF_TYPE


@pytest.mark.parametrize("name", sorted(ON_THE_WIRE))
def test_the_envelope_takes_type_subject_and_topic_from_its_record(name: str) -> None:
    event = factory(name)()
    topic, key = ON_THE_WIRE[name]

    assert (event.type, event.topic, event.subject) == (name, topic, getattr(event.record, key))
    headers = headers_of(event)
    assert (headers["ce_type"], headers["ce_subject"]) == (name, event.subject)


@pytest.mark.parametrize("name", sorted(ON_THE_WIRE))
def test_every_record_decodes_to_the_event_that_was_sent(name: str) -> None:
    owner = OWNER_OF_TOPIC[ON_THE_WIRE[name][0]]
    event = dataclasses.replace(
        factory(name)(),
        time=datetime(2026, 5, 4, 3, 2, 1, 987000, tzinfo=UTC),
        source=source_of(owner),
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )

    value, headers = wire(event)

    assert decode_record(headers, value, STORE) == event


def test_the_headers_are_the_cloudevents_binary_mode_ones_and_the_time_is_utc() -> None:
    event = dataclasses.replace(
        make.order_confirmed(),
        time=datetime(2026, 5, 4, 5, 2, 1, 987654, tzinfo=timezone(timedelta(hours=2))),
        source="/order_service",
    )

    assert headers_of(event) == {
        "ce_specversion": "1.0",
        "ce_id": event.id,
        "ce_type": "OrderConfirmed",
        "ce_source": "/order_service",
        "ce_time": "2026-05-04T03:02:01.987+00:00",
        "ce_subject": event.record.order_id,
        "content-type": "application/avro",
    }
    traced = dataclasses.replace(event, traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01")
    assert headers_of(traced)["traceparent"] == traced.traceparent


def test_a_record_without_a_time_happened_when_it_was_read() -> None:
    value, headers = wire(valid_event(str(uuid.uuid4()), 1))
    before = datetime.now(UTC)

    decoded = decode_record([(n, v) for n, v in headers if n != "ce_time"], value, STORE)

    assert before <= decoded.time <= datetime.now(UTC)


def test_a_type_that_is_not_the_writer_schemas_is_refused() -> None:
    value, headers = wire(valid_event(str(uuid.uuid4()), 1))
    claimed = [(n, b"LowStockDetected" if n == "ce_type" else v) for n, v in headers]

    with pytest.raises(EnvelopeError, match="does not match the writer schema 'StockLevelChanged'"):
        decode_record(claimed, value, STORE)


def test_only_the_owner_of_a_topic_may_be_its_source() -> None:
    owned = dataclasses.replace(make.payment_failed(), source="/payment_service")
    check_source(owned)

    for source in ("/order_service", ""):
        with pytest.raises(RejectedEventError, match="comes from the payment service, not"):
            check_source(dataclasses.replace(owned, source=source))
