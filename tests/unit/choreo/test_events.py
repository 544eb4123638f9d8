"""The event envelope: any bytes a record can hold decode to an event or to a kit error."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from choreo.avro import default_store
from choreo.errors import ChoreoError
from choreo.events import EnvelopeError, decode_record
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
