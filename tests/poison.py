"""Hypothesis strategies for poison records: Kafka records no consumer can apply.

Each drawn record starts as a valid Choreo event (CloudEvents headers, Avro single-object
value) and gets at least one fatal defect — a CloudEvents header missing, null, repeated, not
UTF-8 or malformed; a value empty, garbage, truncated, with the wrong magic, an unknown
fingerprint, or a stored fingerprint over a body that does not fit it — plus, at random, harmless
oddities: extra headers with null, binary or huge values, a null or non-UTF-8 key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hypothesis import strategies as st

from choreo.avro import default_store
from choreo.avro.codec import MAGIC
from choreo.events import Event, headers_of
from choreo.records import Record, StockLevelChanged
from choreo.testing import records as make

Header = tuple[str, bytes | None]


@dataclass(frozen=True)
class RawRecord:
    """What goes on the wire, byte for byte."""

    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    defects: tuple[str, ...]


def valid_event(key: str, available: int) -> Event[StockLevelChanged]:
    changed = make.stock_level_changed(product_id=key, available=available)
    # StockLevelChanged's owner, as its relay names it.
    return dataclasses.replace(changed, source="/inventory_service")


def wire(event: Event[Record]) -> tuple[bytes, list[Header]]:
    """The value and headers a relay would publish for `event`."""
    value = default_store().encode(event.type, event.record.to_avro())
    return value, [(name, text.encode()) for name, text in headers_of(event).items()]


_CE_HEADERS = ("ce_specversion", "ce_id", "ce_type", "ce_subject", "ce_time")


def _header_defect(name: str) -> st.SearchStrategy[tuple[str, object]]:
    """A defect of CloudEvents header `name`: (what, replacement; None drops it)."""
    malformed = {
        "ce_specversion": st.sampled_from([b"0.3", b"2.0", b""]),
        "ce_id": st.sampled_from([b"", b"a\x00b", b"\n", b"x" * 201]),
        "ce_type": st.sampled_from([b"", b"OrderCreated", b"NoSuchRecord"]),
        "ce_subject": st.sampled_from([b"", b"\x07bell", b"k" * 300]),
        "ce_time": st.sampled_from(
            [b"yesterday", b"2026-13-45T00:00:00Z", b"0001-01-01T00:00+01:00"]
        ),
    }[name]
    # Every header but ce_time is required (a missing ce_time reads as "now").
    missing = st.nothing() if name == "ce_time" else st.just((f"{name} missing", "drop"))
    return st.one_of(
        missing,
        st.just((f"{name} null", None)),
        st.just((f"{name} not UTF-8", b"\xff\xfe\xfd")),
        st.binary(min_size=1, max_size=8).map(lambda raw: (f"{name} repeated", ("repeat", raw))),
        malformed.map(lambda raw: (f"{name} malformed", raw)),
    )


@st.composite
def _value_defect(draw: st.DrawFn, valid: bytes) -> tuple[str, bytes | None]:
    store = default_store()
    other = store.encode(
        "UserDeleted", {"user_id": "6c0f3a3e-8d7a-4e8e-9f0e-3a3b3c3d3e3f", "deleted_at": 0}
    )
    stored_fingerprint = other[2:10]
    choices = [
        ("no value", st.none()),
        ("empty value", st.just(b"")),
        ("garbage value", st.binary(min_size=1, max_size=64)),
        ("truncated Avro", st.integers(1, len(valid) - 1).map(lambda cut: valid[:-cut])),
        (
            "wrong magic",
            st.binary(min_size=2, max_size=2)
            .filter(lambda m: m != MAGIC)
            .map(lambda magic: magic + valid[2:]),
        ),
        (
            "unknown fingerprint",
            st.binary(min_size=8, max_size=8).map(lambda fp: MAGIC + fp + valid[10:]),
        ),
        (
            "stored fingerprint, body that does not fit",
            st.binary(max_size=32).map(lambda body: MAGIC + stored_fingerprint + body),
        ),
        ("trailing bytes", st.binary(min_size=1, max_size=8).map(lambda extra: valid + extra)),
        ("another record's value", st.just(other)),
    ]
    what, strategy = draw(st.sampled_from(choices))
    return what, draw(strategy)


_odd_header_value = st.one_of(
    st.none(),
    st.binary(max_size=16),
    st.just(b"\xc0\xaf"),  # overlong UTF-8
    st.just(b"h" * 100_000),  # a huge header
)
_odd_headers = st.lists(
    st.tuples(
        st.one_of(
            st.sampled_from(["x-note", "traceparent", "dlq.consumer"]),
            st.text(min_size=1, max_size=12),
        ),
        _odd_header_value,
    ),
    max_size=3,
)


@st.composite
def poison_records(draw: st.DrawFn, key: str) -> RawRecord:
    """A record of saga `key` with at least one fatal defect (see the module docstring)."""
    value, headers = wire(valid_event(key, draw(st.integers(0, 1000))))
    defects: list[str] = []
    header_defects = draw(st.lists(st.sampled_from(_CE_HEADERS), unique=True, max_size=2))
    value_broken = draw(st.booleans()) or not header_defects
    for name in header_defects:
        what, replacement = draw(_header_defect(name))
        defects.append(what)
        position = next(i for i, (n, _) in enumerate(headers) if n == name)
        if replacement == "drop":
            del headers[position]
        elif isinstance(replacement, tuple):
            headers.append((name, replacement[1]))
        else:
            headers[position] = (name, replacement)  # type: ignore[assignment]
    broken_value: bytes | None = value
    if value_broken:
        what, broken_value = draw(_value_defect(value))
        defects.append(what)
    odd = draw(_odd_headers)
    headers[draw(st.integers(0, len(headers))) : 0] = odd
    record_key = draw(
        st.one_of(st.just(key.encode()), st.none(), st.just(b"\xff\xfe" + key.encode()))
    )
    return RawRecord(record_key, broken_value, tuple(headers), tuple(defects))
