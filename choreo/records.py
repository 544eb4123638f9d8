"""The event records, typed: one frozen class per Avro record of `schemas/`, at its latest
version.

A record class knows its logical topic (`TOPIC`, DESIGN.md §3) and which of its fields is the
saga key the broker partitions by (`SUBJECT`: the order id, the product id of catalog events,
the user id of account events), so `uow.publish(OrderCreated(...))` needs nothing else, and a
consumer's handler receives the class it subscribed to instead of a dictionary.

Field types follow the Avro schema: `string` (with or without the `uuid` logical type) is
`str`, `int`/`long` is `int`, `boolean` is `bool`, `bytes` is `bytes`, `timestamp-millis` is an
aware `datetime`, an array is a `tuple`, a nested record is its own frozen class, and a union
with `null` is `X | None` with the schema's default. `check_records(store)` proves every class
against the latest stored schema (names, order, types, defaults); `choreo schemas check` and
the unit tests run it, so a schema change without its class (or the reverse) cannot land.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar, Self, TypeVar

from choreo.avro import SchemaStore


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Nested:
    """A record nested in an event record (an order line, say): no topic, no subject."""

    def to_avro(self) -> dict[str, Any]:
        """The datum fastavro writes: field name -> value, nested records as dicts."""
        return _to_avro(self)

    @classmethod
    def from_avro(cls, datum: Mapping[str, Any]) -> Self:
        """The record of a datum fastavro read (extra fields of a newer writer are dropped by
        schema resolution before this; a missing one is a `KeyError`)."""
        record: Self = _from_avro(cls, datum)
        return record


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Record(Nested):
    """An event record: published on `TOPIC`, keyed by its `SUBJECT` field."""

    TOPIC: ClassVar[str]
    SUBJECT: ClassVar[str]

    @classmethod
    def type_name(cls) -> str:
        """The Avro record name, which is also the CloudEvents `type` (`OrderCreated`)."""
        return cls.__name__

    @property
    def subject(self) -> str:
        """The saga key: the Kafka record key and the CloudEvents `subject`."""
        return str(getattr(self, self.SUBJECT))


# --- nested records ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OrderLine(Nested):
    product_id: str
    quantity: int
    unit_price: int
    """Minor units of the order's currency (cents)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StockLine(Nested):
    product_id: str
    quantity: int


# --- order.create, order.event ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OrderCreated(Record):
    TOPIC: ClassVar[str] = "order.create"
    SUBJECT: ClassVar[str] = "order_id"

    order_id: str
    user_id: str
    items: tuple[OrderLine, ...]
    total_amount: int
    currency: str
    payment_method_id: str | None = None
    deadline: datetime
    created_at: datetime
    client_ip: str | None = None
    """v2: where the order was placed from, for the risk screening (None: unknown)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OrderConfirmed(Record):
    TOPIC: ClassVar[str] = "order.event"
    SUBJECT: ClassVar[str] = "order_id"

    order_id: str
    user_id: str
    total_amount: int
    currency: str
    confirmed_at: datetime


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OrderCancelled(Record):
    TOPIC: ClassVar[str] = "order.event"
    SUBJECT: ClassVar[str] = "order_id"

    order_id: str
    user_id: str
    reason: str
    previous_status: str
    charged: bool
    cancelled_at: datetime


# --- stock.updated ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StockReserved(Record):
    TOPIC: ClassVar[str] = "stock.updated"
    SUBJECT: ClassVar[str] = "order_id"

    order_id: str
    items: tuple[StockLine, ...]
    reserved_at: datetime


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StockRejected(Record):
    TOPIC: ClassVar[str] = "stock.updated"
    SUBJECT: ClassVar[str] = "order_id"

    order_id: str
    reason: str
    unavailable_product_ids: tuple[str, ...]
    rejected_at: datetime


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StockReleased(Record):
    TOPIC: ClassVar[str] = "stock.updated"
    SUBJECT: ClassVar[str] = "order_id"

    order_id: str
    items: tuple[StockLine, ...]
    reason: str
    released_at: datetime


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StockLevelChanged(Record):
    TOPIC: ClassVar[str] = "stock.updated"
    SUBJECT: ClassVar[str] = "product_id"

    product_id: str
    available: int
    reserved: int
    sold: int
    changed_at: datetime


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LowStockDetected(Record):
    TOPIC: ClassVar[str] = "stock.updated"
    SUBJECT: ClassVar[str] = "product_id"

    product_id: str
    product_name: str
    available: int
    threshold: int
    detected_at: datetime


# --- payment.event ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PaymentSucceeded(Record):
    TOPIC: ClassVar[str] = "payment.event"
    SUBJECT: ClassVar[str] = "order_id"

    order_id: str
    payment_id: str
    amount: int
    currency: str
    provider_payment_id: str
    succeeded_at: datetime


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PaymentFailed(Record):
    TOPIC: ClassVar[str] = "payment.event"
    SUBJECT: ClassVar[str] = "order_id"

    order_id: str
    payment_id: str | None = None
    amount: int
    currency: str
    decline_code: str
    message: str
    failed_at: datetime


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PaymentActionRequired(Record):
    TOPIC: ClassVar[str] = "payment.event"
    SUBJECT: ClassVar[str] = "order_id"

    order_id: str
    payment_id: str
    amount: int
    currency: str
    provider_payment_id: str
    client_secret: str = dataclasses.field(repr=False)
    """Lets the order's customer authenticate this one intent: never logged."""
    next_action_type: str
    redirect_url: str | None = None
    required_at: datetime


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RiskReason(Nested):
    rule: str
    points: int
    detail: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RiskAssessed(Record):
    TOPIC: ClassVar[str] = "payment.event"
    SUBJECT: ClassVar[str] = "order_id"

    order_id: str
    user_id: str
    decision: str
    """APPROVE, REVIEW or DECLINE (payment_service.risk.RiskDecision)."""
    score: int
    reasons: tuple[RiskReason, ...]
    review_expires_at: datetime | None = None
    assessed_at: datetime


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRefunded(Record):
    TOPIC: ClassVar[str] = "payment.event"
    SUBJECT: ClassVar[str] = "order_id"

    order_id: str
    payment_id: str
    refund_id: str
    provider_refund_id: str
    amount: int
    currency: str
    refunded_at: datetime


# --- user.event ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UserRegistered(Record):
    TOPIC: ClassVar[str] = "user.event"
    SUBJECT: ClassVar[str] = "user_id"

    user_id: str
    email: str
    full_name: str
    role: str
    registered_at: datetime


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UserUpdated(Record):
    TOPIC: ClassVar[str] = "user.event"
    SUBJECT: ClassVar[str] = "user_id"

    user_id: str
    email: str
    full_name: str
    phone: str | None = None
    updated_at: datetime


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UserDeleted(Record):
    TOPIC: ClassVar[str] = "user.event"
    SUBJECT: ClassVar[str] = "user_id"

    user_id: str
    deleted_at: datetime


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PasswordResetRequested(Record):
    TOPIC: ClassVar[str] = "user.event"
    SUBJECT: ClassVar[str] = "user_id"

    user_id: str
    email: str
    full_name: str | None = None
    token: str
    """Empty when `sealed_token` carries it (v2: sealed for the notification service)."""
    expires_at: datetime
    sealed_token: bytes | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SessionsRevoked(Record):
    TOPIC: ClassVar[str] = "user.event"
    SUBJECT: ClassVar[str] = "user_id"

    user_id: str
    session_ids: tuple[str, ...]
    reason: str
    revoked_at: datetime
    expires_at: datetime


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NotificationPreference(Nested):
    kind: str
    email: bool
    sms: bool
    in_app: bool


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NotificationPreferencesChanged(Record):
    TOPIC: ClassVar[str] = "user.event"
    SUBJECT: ClassVar[str] = "user_id"

    user_id: str
    preferences: tuple[NotificationPreference, ...]
    """Every kind's channels as they now are (not a diff)."""
    changed_at: datetime


RECORDS: Mapping[str, type[Record]] = {
    cls.__name__: cls
    for cls in (
        OrderCreated,
        StockReserved,
        StockRejected,
        StockReleased,
        StockLevelChanged,
        LowStockDetected,
        PaymentSucceeded,
        PaymentFailed,
        PaymentRefunded,
        RiskAssessed,
        PaymentActionRequired,
        OrderConfirmed,
        OrderCancelled,
        UserRegistered,
        UserUpdated,
        UserDeleted,
        PasswordResetRequested,
        SessionsRevoked,
        NotificationPreferencesChanged,
    )
}
"""Every event record class by its Avro record name (= CloudEvents type)."""

R = TypeVar("R", bound=Record, covariant=True)
"""A record class, in a type that holds one (an event's envelope)."""


# --- conversion ---------------------------------------------------------------------------------

_Convert = Callable[[Any], Any]
_FROM_AVRO: dict[type[Nested], tuple[tuple[str, _Convert], ...]] = {}


def _to_avro(record: Nested) -> dict[str, Any]:
    return {field.name: _out(getattr(record, field.name)) for field in dataclasses.fields(record)}


def _out(value: Any) -> Any:
    if isinstance(value, Nested):
        return _to_avro(value)
    if isinstance(value, tuple):
        return [_out(item) for item in value]
    return value


def _from_avro(cls: type[Nested], datum: Mapping[str, Any]) -> Any:
    converters = _FROM_AVRO.get(cls)
    if converters is None:
        hints = typing.get_type_hints(cls)
        converters = _FROM_AVRO[cls] = tuple(
            (field.name, _converter(hints[field.name])) for field in dataclasses.fields(cls)
        )
    return cls(**{name: convert(datum[name]) for name, convert in converters})


def _converter(hint: Any) -> _Convert:
    """How a value fastavro read becomes the field's type (a `uuid` string arrives as a UUID)."""
    if hint is str:
        return str
    if isinstance(hint, type) and issubclass(hint, Nested):
        return hint.from_avro
    origin = typing.get_origin(hint)
    arguments = typing.get_args(hint)
    if origin is tuple:
        item = _converter(arguments[0])
        return lambda values: tuple(item(value) for value in values)
    if origin in (types.UnionType, typing.Union):
        (inner,) = [argument for argument in arguments if argument is not type(None)]
        convert = _converter(inner)
        return lambda value: None if value is None else convert(value)
    return _same


def _same(value: Any) -> Any:
    return value


# --- the check against the schemas --------------------------------------------------------------


def check_records(store: SchemaStore) -> list[str]:
    """What differs between the record classes and the latest stored schemas: a record with no
    class or a class with no record, and, field by field, a name, order, type or default that
    does not match. Empty when they agree."""
    problems: list[str] = []
    names = set(store.record_names())
    for name in sorted(names - set(RECORDS)):
        problems.append(f"{name}: a schema with no class in choreo.records")
    for name in sorted(set(RECORDS) - names):
        problems.append(f"{name}: a class in choreo.records with no schema")
    for name in sorted(names & set(RECORDS)):
        problems += [
            f"{name}: {problem}" for problem in _compare(RECORDS[name], store.schema(name))
        ]
    return problems


def _compare(cls: type[Nested], schema: Mapping[str, Any]) -> Iterator[str]:
    fields = dataclasses.fields(cls)
    hints = typing.get_type_hints(cls)
    wanted = [field["name"] for field in schema["fields"]]
    have = [field.name for field in fields]
    if wanted != have:
        yield f"fields {have} do not match the schema's {wanted}"
        return
    for field, avro in zip(fields, schema["fields"], strict=True):
        expected = _python_type(avro["type"])
        if expected != hints[field.name]:
            yield f"{field.name} is {_show(hints[field.name])}, the schema says {_show(expected)}"
        has_default = field.default is not dataclasses.MISSING
        if has_default != ("default" in avro) or (has_default and field.default != avro["default"]):
            schema_default = repr(avro["default"]) if "default" in avro else "none"
            yield f"{field.name} has default {field.default!r}, the schema {schema_default}"
        if isinstance(expected, type) and issubclass(expected, Nested):
            yield from (f"{field.name}.{problem}" for problem in _compare(expected, avro["type"]))
        item = _array_item(avro["type"])
        if isinstance(item, dict) and item.get("type") == "record":
            (nested,) = typing.get_args(hints[field.name])[:1]
            yield from (f"{field.name}[].{problem}" for problem in _compare(nested, item))


def _array_item(avro: Any) -> Any:
    return avro["items"] if isinstance(avro, dict) and avro.get("type") == "array" else None


_PRIMITIVES: Mapping[str, Any] = {
    "string": str,
    "int": int,
    "long": int,
    "boolean": bool,
    "bytes": bytes,
    "double": float,
    "float": float,
}


def _python_type(avro: Any) -> Any:
    """The Python type a field of this Avro type has in a record class."""
    if isinstance(avro, list):
        branches = [branch for branch in avro if branch != "null"]
        if len(branches) != 1 or len(avro) != 2:
            return object  # no class uses other unions; the check reports the mismatch
        return _python_type(branches[0]) | None
    if isinstance(avro, str):
        return _PRIMITIVES.get(avro, object)
    if avro.get("logicalType") == "timestamp-millis":
        return datetime
    if avro["type"] == "array":
        return tuple[_python_type(avro["items"]), ...]  # type: ignore[misc]
    if avro["type"] == "record":
        nested = [
            cls
            for cls in (OrderLine, StockLine, RiskReason, NotificationPreference)
            if avro["name"].endswith(cls.__name__)
        ]
        return nested[0] if nested else object
    return _python_type(avro["type"])


def _show(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("datetime.datetime", "datetime")
