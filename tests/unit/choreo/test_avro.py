"""The schema store and codec: fingerprints, single-object framing, evolution, bad input."""

from __future__ import annotations

import io
import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import fastavro
import fastavro.schema
import pytest

from choreo.avro import (
    SCHEMA_DIR,
    AvroError,
    IncompatibleSchemaError,
    SchemaStore,
    UndecodableError,
    UnknownSchemaError,
    check_store,
    compatibility_problems,
    default_store,
    fingerprint,
)
from choreo.errors import ChoreoError

ORDER = UUID("0b7c9a52-3f0e-4f5e-9a4e-2d1c0b8e7f61")
USER = UUID("5e2f8d1a-7c4b-4e9a-8f3d-1a2b3c4d5e6f")
PRODUCT = UUID("9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a")
OTHER_PRODUCT = UUID("1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d")
PAYMENT = UUID("3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f")
REFUND = UUID("7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2918")
AT = datetime(2025, 3, 14, 15, 9, 26, 535000, tzinfo=UTC)
LATER = datetime(2025, 3, 14, 15, 24, 26, 535000, tzinfo=UTC)

SAMPLES: dict[str, dict[str, Any]] = {
    "OrderCreated": {
        "order_id": ORDER,
        "user_id": USER,
        "items": [
            {"product_id": PRODUCT, "quantity": 2, "unit_price": 1999},
            {"product_id": OTHER_PRODUCT, "quantity": 1, "unit_price": 500},
        ],
        "total_amount": 4498,
        "currency": "USD",
        "payment_method_id": "pm_1Nw6QbLkdIwHu7ix",
        "deadline": LATER,
        "created_at": AT,
        "client_ip": "203.0.113.7",
    },
    "StockReserved": {
        "order_id": ORDER,
        "items": [{"product_id": PRODUCT, "quantity": 2}],
        "reserved_at": AT,
    },
    "StockRejected": {
        "order_id": ORDER,
        "reason": "INSUFFICIENT_STOCK",
        "unavailable_product_ids": [PRODUCT, OTHER_PRODUCT],
        "rejected_at": AT,
    },
    "StockReleased": {
        "order_id": ORDER,
        "items": [{"product_id": PRODUCT, "quantity": 2}],
        "reason": "PAYMENT_FAILED",
        "released_at": AT,
    },
    "StockLevelChanged": {
        "product_id": PRODUCT,
        "available": 7,
        "reserved": 2,
        "sold": 41,
        "changed_at": AT,
    },
    "LowStockDetected": {
        "product_id": PRODUCT,
        "product_name": "Espresso cup, café crème",
        "available": 3,
        "threshold": 5,
        "detected_at": AT,
    },
    "PaymentSucceeded": {
        "order_id": ORDER,
        "payment_id": PAYMENT,
        "amount": 4498,
        "currency": "USD",
        "provider_payment_id": "pi_3Nw6QbLkdIwHu7ix0",
        "succeeded_at": AT,
    },
    "PaymentFailed": {
        "order_id": ORDER,
        "payment_id": None,
        "amount": 4498,
        "currency": "EUR",
        "decline_code": "card_declined",
        "message": "Your card was declined.",
        "failed_at": AT,
    },
    "PaymentRefunded": {
        "order_id": ORDER,
        "payment_id": PAYMENT,
        "refund_id": REFUND,
        "provider_refund_id": "re_3Nw6QbLkdIwHu7ix1",
        "amount": 4498,
        "currency": "USD",
        "refunded_at": AT,
    },
    "RiskAssessed": {
        "order_id": ORDER,
        "user_id": USER,
        "decision": "REVIEW",
        "score": 30,
        "reasons": [
            {"rule": "card_velocity_review", "points": 0, "detail": "attempt 6 with this card"},
            {"rule": "amount_anomaly", "points": 30, "detail": "4498 is over 3 times 1000"},
        ],
        "review_expires_at": LATER,
        "assessed_at": AT,
    },
    "PaymentActionRequired": {
        "order_id": ORDER,
        "payment_id": PAYMENT,
        "amount": 4498,
        "currency": "USD",
        "provider_payment_id": "pi_3Nw6QbLkdIwHu7ix0",
        "client_secret": "pi_3Nw6QbLkdIwHu7ix0_secret_Yk2x9",
        "next_action_type": "redirect_to_url",
        "redirect_url": "https://hooks.stripe.com/3d_secure_2/hosted?merchant=acct_1",
        "required_at": AT,
    },
    "OrderConfirmed": {
        "order_id": ORDER,
        "user_id": USER,
        "total_amount": 4498,
        "currency": "USD",
        "confirmed_at": AT,
    },
    "OrderCancelled": {
        "order_id": ORDER,
        "user_id": USER,
        "reason": "TIMEOUT",
        "previous_status": "RESERVED",
        "charged": True,
        "cancelled_at": AT,
    },
    "UserRegistered": {
        "user_id": USER,
        "email": "ada@example.com",
        "full_name": "Ada Lovelace",
        "role": "customer",
        "registered_at": AT,
    },
    "UserUpdated": {
        "user_id": USER,
        "email": "ada@example.com",
        "full_name": "Ada King",
        "phone": "+44 20 7946 0958",
        "updated_at": AT,
    },
    "UserDeleted": {"user_id": USER, "deleted_at": AT},
    "PasswordResetRequested": {
        "user_id": USER,
        "email": "ada@example.com",
        "full_name": "Ada Lovelace",
        "token": "",
        "expires_at": AT,
        "sealed_token": bytes(range(32)) + b"sealed token and its tag",
    },
    "SessionsRevoked": {
        "user_id": USER,
        "session_ids": [
            UUID("0b9d7c1e-5a4f-4e2b-8c3d-1f2e3d4c5b6a"),
            UUID("7d6c5b4a-3f2e-4d1c-9b8a-7f6e5d4c3b2a"),
        ],
        "reason": "password_changed",
        "revoked_at": AT,
        "expires_at": AT,
    },
    "NotificationPreferencesChanged": {
        "user_id": USER,
        "preferences": [
            {"kind": "order_updates", "email": False, "sms": True, "in_app": True},
            {"kind": "low_stock", "email": True, "sms": False, "in_app": False},
        ],
        "changed_at": AT,
    },
}

# CRC-64-AVRO of Parsing Canonical Forms, from the Avro project's own test vectors
# (share/test/data/schema-tests.txt), published as signed 64-bit integers.
SPEC_FINGERPRINTS = [
    ('"null"', 7195948357588979594),
    ('"boolean"', -6970731678124411036),
    ('"int"', 8247732601305521295),
    ('"long"', -3434872931120570953),
    ('"double"', -8181574048448539266),
    ('{"name":"foo","type":"fixed","size":15}', 1756455273707447556),
    (
        '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}',
        7843277075252814651,
    ),
]


def load(record_file: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / record_file).read_text())
    return loaded


def order_created_v2(extra_field: dict[str, Any]) -> dict[str, Any]:
    schema = load("OrderCreated.v1.avsc")
    schema["fields"].append(extra_field)
    return schema


@pytest.fixture
def evolved_dir(tmp_path: Path) -> Path:
    """A store whose OrderCreated v2 adds a field with a default: a compatible change."""
    shutil.copy(SCHEMA_DIR / "OrderCreated.v1.avsc", tmp_path)
    channel = {"name": "channel", "type": "string", "default": "web", "doc": "Where it came from."}
    (tmp_path / "OrderCreated.v2.avsc").write_text(json.dumps(order_created_v2(channel)))
    return tmp_path


@pytest.fixture
def store() -> SchemaStore:
    return default_store()


# OrderCreated as v1 wrote it (v2 added client_ip), for the tests of an evolution.
ORDER_V1 = {k: v for k, v in SAMPLES["OrderCreated"].items() if k != "client_ip"}

# Records evolved since the design: the versions stored of each.
EVOLVED = {"PasswordResetRequested": [1, 2], "OrderCreated": [1, 2]}


def test_every_record_of_the_design_is_stored_from_version_1() -> None:
    assert default_store().record_names() == sorted(SAMPLES)
    assert all(default_store().versions(name) == EVOLVED.get(name, [1]) for name in SAMPLES)


def test_a_v1_order_is_read_by_v2_with_no_client_address(store: SchemaStore) -> None:
    v1 = ORDER_V1
    payload = store.encode("OrderCreated", v1, version=1)

    assert store.decode(payload) == ("OrderCreated", {**v1, "client_ip": None})


def test_a_clear_v1_reset_token_is_read_by_v2_as_not_sealed(store: SchemaStore) -> None:
    clear = {**SAMPLES["PasswordResetRequested"], "token": "q2v5Xb9lY0bJ4m1c7kR3t8w6zP0aN5sH2dF4"}
    del clear["sealed_token"]
    payload = store.encode("PasswordResetRequested", clear, version=1)

    assert store.decode(payload) == ("PasswordResetRequested", {**clear, "sealed_token": None})


def test_a_v1_reader_of_a_sealed_token_sees_an_empty_token(store: SchemaStore) -> None:
    # What a notification service older than the seal reads: no token at all, so it must be
    # upgraded before the user service is given CHOREO_NOTIFICATION_KEY.
    payload = store.encode("PasswordResetRequested", SAMPLES["PasswordResetRequested"])

    _, datum = store.decode(payload, reader_version=1)

    assert datum["token"] == ""
    assert "sealed_token" not in datum


@pytest.mark.parametrize("path", sorted(SCHEMA_DIR.glob("*.avsc")), ids=lambda path: path.name)
def test_every_stored_schema_is_a_documented_choreo_events_record(path: Path) -> None:
    schema = json.loads(path.read_text())

    assert schema["namespace"] == "choreo.events"
    assert schema["doc"]
    assert all(field.get("doc") for field in schema["fields"])


def test_the_stored_schemas_pass_the_check() -> None:
    assert check_store() == []


@pytest.mark.parametrize("record_name", sorted(SAMPLES))
def test_every_record_round_trips(store: SchemaStore, record_name: str) -> None:
    payload = store.encode(record_name, SAMPLES[record_name])

    assert store.decode(payload) == (record_name, SAMPLES[record_name])


def test_ids_and_times_may_be_given_as_strings_and_milliseconds(store: SchemaStore) -> None:
    datum = {"user_id": str(USER), "deleted_at": int(AT.timestamp() * 1000)}

    assert store.decode(store.encode("UserDeleted", datum)) == (
        "UserDeleted",
        SAMPLES["UserDeleted"],
    )


def test_an_omitted_field_with_a_default_takes_the_default(store: SchemaStore) -> None:
    datum = dict(SAMPLES["OrderCreated"])
    del datum["payment_method_id"]

    _, decoded = store.decode(store.encode("OrderCreated", datum))

    assert decoded["payment_method_id"] is None


def test_the_payload_is_the_single_object_encoding_of_the_avro_spec(store: SchemaStore) -> None:
    schema = store.schema("OrderCreated")
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema, SAMPLES["OrderCreated"])

    payload = store.encode("OrderCreated", SAMPLES["OrderCreated"])

    assert payload[:2] == b"\xc3\x01"
    assert payload[2:10] == fingerprint(schema)
    assert payload[10:] == body.getvalue()


@pytest.mark.parametrize(("canonical_form", "signed_crc"), SPEC_FINGERPRINTS)
def test_fingerprint_is_the_specs_crc_64_avro_in_little_endian_order(
    canonical_form: str, signed_crc: int
) -> None:
    schema = json.loads(canonical_form)

    assert fingerprint(schema) == signed_crc.to_bytes(8, "little", signed=True)


@pytest.mark.parametrize("record_name", sorted(SAMPLES))
def test_fingerprint_agrees_with_fastavro(store: SchemaStore, record_name: str) -> None:
    schema = store.schema(record_name)
    canonical_form = fastavro.schema.to_parsing_canonical_form(schema)

    expected = fastavro.schema.fingerprint(canonical_form, "CRC-64-AVRO")

    assert fingerprint(schema).hex() == expected


def test_fingerprint_ignores_docs_defaults_and_logical_types() -> None:
    documented = load("UserDeleted.v1.avsc")
    bare = {
        "type": "record",
        "name": "choreo.events.UserDeleted",
        "fields": [{"name": "user_id", "type": "string"}, {"name": "deleted_at", "type": "long"}],
    }

    assert fingerprint(documented) == fingerprint(bare)


def test_v1_bytes_are_read_by_a_v2_reader_with_the_new_fields_default(evolved_dir: Path) -> None:
    store = SchemaStore.from_directory(evolved_dir)
    payload = store.encode("OrderCreated", ORDER_V1, version=1)

    record_name, datum = store.decode(payload)

    assert record_name == "OrderCreated"
    assert datum == {**ORDER_V1, "channel": "web"}


def test_v2_bytes_are_read_by_a_v1_reader_without_the_new_field(evolved_dir: Path) -> None:
    store = SchemaStore.from_directory(evolved_dir)
    payload = store.encode("OrderCreated", {**ORDER_V1, "channel": "mobile"})

    assert payload[2:10] == fingerprint(store.schema("OrderCreated", 2))
    assert store.decode(payload, reader_version=1) == ("OrderCreated", ORDER_V1)
    assert store.decode(payload)[1]["channel"] == "mobile"


def test_a_consumer_that_only_knows_v1_reads_v2_bytes(evolved_dir: Path) -> None:
    producer = SchemaStore.from_directory(evolved_dir)
    consumer = SchemaStore({"OrderCreated": {1: load("OrderCreated.v1.avsc")}})

    payload = producer.encode("OrderCreated", {**ORDER_V1, "channel": "mobile"})

    with pytest.raises(UnknownSchemaError, match="fingerprint"):
        consumer.decode(payload)


def test_the_evolved_store_passes_the_check(evolved_dir: Path) -> None:
    assert check_store(evolved_dir) == []


def test_reading_with_an_incompatible_reader_is_an_incompatible_schema_error() -> None:
    required = {"name": "channel", "type": "string"}
    store = SchemaStore(
        {"OrderCreated": {1: load("OrderCreated.v1.avsc"), 2: order_created_v2(required)}}
    )
    payload = store.encode("OrderCreated", ORDER_V1, version=1)

    with pytest.raises(IncompatibleSchemaError, match="OrderCreated v2 cannot read v1"):
        store.decode(payload)


def test_an_unknown_fingerprint_is_an_unknown_schema_error(store: SchemaStore) -> None:
    payload = store.encode("UserDeleted", SAMPLES["UserDeleted"])
    foreign = payload[:2] + bytes(8) + payload[10:]

    with pytest.raises(UnknownSchemaError, match="0000000000000000"):
        store.decode(foreign)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc3\x01\x00\x01", id="header-cut-short"),
        pytest.param(b"\x00" * 40, id="no-magic"),
        pytest.param(b'{"user_id": "5e2f8d1a"}', id="json"),
        pytest.param(b"\x00\x00\x00\x00\x01" + b"\x00" * 20, id="confluent-framing"),
    ],
)
def test_bytes_that_are_not_single_object_encoding_are_undecodable(
    store: SchemaStore, payload: bytes
) -> None:
    with pytest.raises(UndecodableError, match="single-object"):
        store.decode(payload)


def test_a_truncated_body_is_undecodable(store: SchemaStore) -> None:
    payload = store.encode("OrderCreated", SAMPLES["OrderCreated"])

    for length in range(10, len(payload)):
        with pytest.raises(UndecodableError, match="OrderCreated v2"):
            store.decode(payload[:length])


def test_a_garbage_body_is_undecodable(store: SchemaStore) -> None:
    payload = store.encode("UserRegistered", SAMPLES["UserRegistered"])

    with pytest.raises(UndecodableError):
        store.decode(payload[:10] + b"\xff" * 20)


def test_bytes_after_the_record_are_undecodable(store: SchemaStore) -> None:
    payload = store.encode("UserDeleted", SAMPLES["UserDeleted"])

    with pytest.raises(UndecodableError, match="bytes after the record"):
        store.decode(payload + b"\x00")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"total_amount": "4498"}, "total_amount cannot be '4498' (expected long)"),
        ({"currency": None}, "currency cannot be None (expected string)"),
        ({"payment_method_id": 7}, "payment_method_id cannot be 7 (expected null or string)"),
        ({"order_id": "order-1"}, "order_id cannot be 'order-1' (expected uuid)"),
        (
            {"items": [{"product_id": "p-1", "quantity": 1, "unit_price": 1}]},
            "items[0].product_id cannot be 'p-1' (expected uuid)",
        ),
    ],
)
def test_an_invalid_datum_is_refused_with_the_field_it_gets_wrong(
    store: SchemaStore, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(AvroError, match=re.escape(message)):
        store.encode("OrderCreated", {**SAMPLES["OrderCreated"], **change})


def test_unknown_record_names_and_versions_are_unknown_schema_errors(store: SchemaStore) -> None:
    with pytest.raises(UnknownSchemaError, match="OrderShipped"):
        store.encode("OrderShipped", {})
    with pytest.raises(UnknownSchemaError, match="no version 9"):
        store.schema("OrderCreated", 9)
    payload = store.encode("UserDeleted", SAMPLES["UserDeleted"])
    with pytest.raises(UnknownSchemaError, match="no version 2"):
        store.decode(payload, reader_version=2)


def test_codec_errors_are_choreo_errors_that_retrying_cannot_fix() -> None:
    for error in (AvroError, UnknownSchemaError, UndecodableError, IncompatibleSchemaError):
        assert issubclass(error, ChoreoError)
        assert error("x").retriable is False


def test_default_store_is_loaded_once() -> None:
    assert default_store() is default_store()


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"OrderCreated.avsc": "UserDeleted.v1.avsc"}, "name the file <RecordName>.v<N>.avsc"),
        ({"OrderCreated.v1.avsc": "UserDeleted.v1.avsc"}, "defines record 'UserDeleted'"),
        ({"UserDeleted.v2.avsc": "UserDeleted.v1.avsc"}, "versions must run 1..N"),
    ],
)
def test_a_badly_laid_out_directory_is_refused(
    tmp_path: Path, files: dict[str, str], problem: str
) -> None:
    for name, source in files.items():
        shutil.copy(SCHEMA_DIR / source, tmp_path / name)

    assert any(problem in found for found in check_store(tmp_path))
    with pytest.raises(AvroError, match=re.escape(problem)):
        SchemaStore.from_directory(tmp_path)


def test_a_file_that_is_not_an_avro_schema_is_reported(tmp_path: Path) -> None:
    (tmp_path / "UserDeleted.v1.avsc").write_text('{"type": "record", "name": "UserDeleted"')
    (tmp_path / "UserUpdated.v1.avsc").write_text('{"type": "recrod", "name": "UserUpdated"}')

    problems = check_store(tmp_path)

    assert len(problems) == 2
    assert all("not a valid Avro schema" in problem for problem in problems)


def test_a_missing_or_empty_directory_is_reported(tmp_path: Path) -> None:
    assert check_store(tmp_path / "absent") == [f"{tmp_path / 'absent'} is not a directory"]
    assert check_store(tmp_path) == [f"{tmp_path} holds no .avsc schema files"]


def record(*fields: dict[str, Any], name: str = "Event", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def field_of(schema: Any, **extra: Any) -> dict[str, Any]:
    return {"name": "value", "type": schema, **extra}


COLOURS = {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}
MORE_COLOURS = {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN", "BLUE"]}


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        pytest.param("int", "long", id="int-to-long"),
        pytest.param("int", "double", id="int-to-double"),
        pytest.param("long", "float", id="long-to-float"),
        pytest.param("float", "double", id="float-to-double"),
        pytest.param("string", "bytes", id="string-to-bytes"),
        pytest.param("bytes", "string", id="bytes-to-string"),
        pytest.param("string", ["null", "string"], id="into-a-union"),
        pytest.param(["null", "string"], ["null", "string", "long"], id="union-widened"),
        pytest.param(COLOURS, MORE_COLOURS, id="enum-symbol-added"),
        pytest.param(MORE_COLOURS, {**COLOURS, "default": "RED"}, id="enum-default-covers"),
        pytest.param({"type": "array", "items": "int"}, {"type": "array", "items": "long"}),
        pytest.param({"type": "map", "values": "int"}, {"type": "map", "values": "long"}),
        pytest.param(
            {"type": "fixed", "name": "Hash", "size": 16},
            {"type": "fixed", "name": "Digest", "size": 16, "aliases": ["Hash"]},
            id="fixed-renamed-with-alias",
        ),
    ],
)
def test_compatible_changes_have_no_problems(writer: Any, reader: Any) -> None:
    assert compatibility_problems(record(field_of(writer)), record(field_of(reader))) == []


@pytest.mark.parametrize(
    ("writer", "reader", "problem"),
    [
        pytest.param("long", "int", "field 'value' changed type long -> int", id="long-to-int"),
        pytest.param("double", "float", "changed type double -> float", id="double-to-float"),
        pytest.param("boolean", "string", "changed type boolean -> string", id="boolean"),
        pytest.param(
            ["null", "string"],
            "string",
            "changed type union [null, string] -> string, but the writer may write null",
            id="out-of-a-union",
        ),
        pytest.param(
            ["null", "string"],
            ["null", "long"],
            "changed type union [null, string] -> union [null, long], "
            "but the writer may write string",
            id="union-branch-dropped",
        ),
        pytest.param(
            MORE_COLOURS, COLOURS, "the reader lacks enum symbols BLUE", id="enum-symbol-removed"
        ),
        pytest.param(
            {"type": "array", "items": "long"},
            {"type": "array", "items": "int"},
            "field 'value[]' changed type long -> int",
            id="array-items",
        ),
        pytest.param(
            {"type": "map", "values": "string"},
            {"type": "map", "values": "long"},
            "field 'value{}' changed type string -> long",
            id="map-values",
        ),
        pytest.param(
            {"type": "fixed", "name": "Hash", "size": 16},
            {"type": "fixed", "name": "Hash", "size": 32},
            "changed fixed size 16 -> 32",
            id="fixed-size",
        ),
        pytest.param(
            COLOURS,
            {**COLOURS, "name": "Color"},
            "renamed enum Colour -> Color",
            id="renamed-without-alias",
        ),
        pytest.param(
            {"type": "long", "logicalType": "timestamp-millis"},
            {"type": "long", "logicalType": "timestamp-micros"},
            "changed logical type timestamp-millis -> timestamp-micros",
            id="logical-type",
        ),
        pytest.param(
            {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2},
            {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 4},
            "changed decimal scale",
            id="decimal-scale",
        ),
    ],
)
def test_incompatible_changes_are_named(writer: Any, reader: Any, problem: str) -> None:
    problems = compatibility_problems(record(field_of(writer)), record(field_of(reader)))

    assert len(problems) == 1
    assert problem in problems[0]


def test_fields_are_matched_by_name_or_alias_and_nested_paths_are_named() -> None:
    line = record({"name": "quantity", "type": "int"}, name="Line")
    writer = record(
        {"name": "qty_total", "type": "int"},
        {"name": "lines", "type": {"type": "array", "items": line}},
    )
    narrower = record({"name": "quantity", "type": "string"}, name="Line")
    reader = record(
        {"name": "quantity_total", "type": "long", "aliases": ["qty_total"]},
        {"name": "lines", "type": {"type": "array", "items": narrower}},
        {"name": "note", "type": "string"},
    )

    problems = compatibility_problems(writer, reader, writer_label="v1", reader_label="v2")

    assert problems == [
        "field 'lines[].quantity' changed type int -> string",
        "field 'note' is not in v1 and has no default in v2",
    ]


def test_a_recursive_record_is_checked_once() -> None:
    node = record(
        {"name": "label", "type": "string"},
        {"name": "next", "type": ["null", "Node"], "default": None},
        name="Node",
    )

    assert compatibility_problems(node, node) == []


def test_renaming_a_record_is_fine_when_the_reader_keeps_the_old_name_as_an_alias() -> None:
    writer = record({"name": "id", "type": "string"}, name="Customer")
    reader = record({"name": "id", "type": "string"}, name="Client", aliases=["Customer"])

    assert compatibility_problems(writer, reader) == []
    assert compatibility_problems(writer, {**reader, "aliases": []}) == [
        "the top-level schema renamed record Customer -> Client without keeping the old name "
        "in its aliases"
    ]
