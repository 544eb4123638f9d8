"""The typed event records: they match the stored schemas, survive the wire unchanged, and a
service's handlers get them with their dependencies bound once."""

from __future__ import annotations

import copy
import dataclasses
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from choreo.avro import SchemaStore, default_store
from choreo.db import UnitOfWork
from choreo.events import Event
from choreo.records import RECORDS, OrderCreated, StockLevelChanged, check_records
from choreo.service import ConfigurationError, bind
from choreo.testing import records as make


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def store_with(record_name: str, change: Any) -> SchemaStore:
    """The repository's schemas, the latest version of `record_name` edited by `change`."""
    store = default_store()
    schemas: dict[str, dict[int, Any]] = {}
    for name in store.record_names():
        latest = max(store.versions(name))
        schema = copy.deepcopy(_raw(store.schema(name, latest)))
        if name == record_name:
            change(schema)
        schemas[name] = {1: schema}
    return SchemaStore(schemas)


def _raw(parsed: dict[str, Any]) -> dict[str, Any]:
    """A parsed schema without fastavro's bookkeeping keys, fit to be parsed again."""
    return {key: value for key, value in parsed.items() if not key.startswith("__")}


def test_every_record_class_matches_its_latest_schema() -> None:
    assert check_records(default_store()) == []


def test_a_field_of_another_type_is_reported() -> None:
    def long_currency(schema: dict[str, Any]) -> None:
        [field] = [f for f in schema["fields"] if f["name"] == "currency"]
        field["type"] = "long"

    assert check_records(store_with("OrderConfirmed", long_currency)) == [
        "OrderConfirmed: currency is str, the schema says int"
    ]


def test_a_field_the_class_lacks_is_reported() -> None:
    def with_note(schema: dict[str, Any]) -> None:
        schema["fields"].append({"name": "note", "type": ["null", "string"], "default": None})

    [problem] = check_records(store_with("UserDeleted", with_note))
    assert problem.startswith("UserDeleted: fields ['user_id', 'deleted_at'] do not match")


def test_a_nested_record_is_checked_too() -> None:
    def int_price(schema: dict[str, Any]) -> None:
        [items] = [f for f in schema["fields"] if f["name"] == "items"]
        [price] = [f for f in items["type"]["items"]["fields"] if f["name"] == "unit_price"]
        price["type"] = "string"

    assert check_records(store_with("OrderCreated", int_price)) == [
        "OrderCreated: items[].unit_price is int, the schema says str"
    ]


def test_there_is_one_factory_per_record() -> None:
    assert all(callable(getattr(make, snake(name), None)) for name in RECORDS)


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_a_record_survives_the_wire_unchanged(name: str) -> None:
    record = getattr(make, snake(name))().record
    assert type(record) is RECORDS[name]
    store = default_store()
    written, datum = store.decode(store.encode(name, record.to_avro()))
    assert written == name
    assert RECORDS[name].from_avro(datum) == record


def test_the_subject_is_the_saga_key_and_the_topic_comes_from_the_class() -> None:
    created = make.order_created().record
    assert (created.subject, created.TOPIC) == (created.order_id, "order.create")
    level = make.stock_level_changed().record
    assert (level.subject, level.TOPIC) == (level.product_id, "stock.updated")
    event = Event(created)
    assert (event.type, event.subject, event.topic) == (
        "OrderCreated",
        created.order_id,
        "order.create",
    )


def test_a_record_is_immutable() -> None:
    created = make.order_created().record
    with pytest.raises(dataclasses.FrozenInstanceError):
        created.currency = "EUR"  # type: ignore[misc]


async def test_a_handler_gets_the_record_its_envelope_and_its_named_resources() -> None:
    seen: list[tuple[Any, ...]] = []

    async def on_level(
        record: StockLevelChanged, uow: UnitOfWork, *, event: Event[StockLevelChanged], clock: str
    ) -> None:
        seen.append((record, uow, event, clock))

    handler = bind(on_level, {"clock": "the clock", "unused": object()})
    event = make.stock_level_changed(changed_at=datetime(2026, 1, 1, tzinfo=UTC))
    uow: Any = object()
    await handler(event, uow)
    assert seen == [(event.record, uow, event, "the clock")]


def test_a_handler_that_wants_what_the_service_lacks_stops_the_build() -> None:
    async def on_created(record: OrderCreated, uow: UnitOfWork, *, charging: object) -> None:
        del record, uow, charging

    with pytest.raises(ConfigurationError, match="'charging', which is not a resource"):
        bind(on_created, {"clock": object()})
