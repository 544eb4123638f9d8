"""What a failure calls for: the kit's error classes and mixins, a foreign error's own `retriable`
flag, and the outages and lost races of the database, the broker and the network."""

from __future__ import annotations

import psycopg
import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from choreo.errors import (
    ChoreoError,
    Failure,
    NotReadyError,
    NotRetriableError,
    PermanentError,
    RejectedEventError,
    RetriableError,
    TransientError,
    failure_of,
)


class ShopError(ChoreoError):
    """A package's own root, as each service has one."""


class ProviderDownError(ShopError, RetriableError):
    pass


class ProviderDownFirstError(RetriableError, ShopError):
    pass


class OrderRefusedError(ShopError, NotRetriableError):
    pass


class StockNotSeenError(ShopError, NotReadyError):
    pass


class LibraryError(Exception):
    """An error of some library that follows the `retriable` convention (as aiokafka does)."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (ChoreoError("a bug in the kit"), Failure.PERMANENT),
        (PermanentError("a record that can never apply"), Failure.PERMANENT),
        (RejectedEventError("a forged payment"), Failure.PERMANENT),
        (TransientError("the provider answered 503"), Failure.OUTAGE),
        (NotReadyError("the order has not been seen yet"), Failure.RETRY),
        (ShopError("a package's own error"), Failure.PERMANENT),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_the_kits_classes(error: ChoreoError, failure: Failure) -> None:
    assert failure_of(error) is failure


def test_a_mixin_sets_retriable_whatever_the_order_of_bases() -> None:
    for retriable in (ProviderDownError("down"), ProviderDownFirstError("down")):
        assert retriable.retriable is True
        assert failure_of(retriable) is Failure.OUTAGE
    refused = OrderRefusedError("refused")
    assert refused.retriable is False
    assert failure_of(refused) is Failure.PERMANENT
    assert failure_of(StockNotSeenError("not yet")) is Failure.RETRY


def test_a_foreign_errors_own_flag_is_taken_at_its_word() -> None:
    assert failure_of(LibraryError("busy", retriable=True)) is Failure.OUTAGE
    assert failure_of(LibraryError("bad request", retriable=False)) is Failure.PERMANENT
    assert failure_of(KafkaConnectionError()) is Failure.OUTAGE
    assert failure_of(MessageSizeTooLargeError()) is Failure.PERMANENT


def test_a_foreign_flag_outranks_the_class_it_would_otherwise_be_judged_by() -> None:
    class RefusedConnectionError(ConnectionError):
        retriable = False  # say, a TLS handshake the server will refuse every time

    class SlowError(ValueError):
        retriable = True

    assert failure_of(RefusedConnectionError()) is Failure.PERMANENT
    assert failure_of(SlowError()) is Failure.OUTAGE


def test_a_retriable_attribute_that_is_no_flag_is_ignored() -> None:
    class WithMethodError(ConnectionError):
        def retriable(self) -> bool:
            return False

    class WithTextError(ValueError):
        retriable = "maybe"

    assert failure_of(WithMethodError()) is Failure.OUTAGE  # a ConnectionError, as ever
    assert failure_of(WithTextError()) is Failure.PERMANENT


def _database_error(
    sqlstate: str | None, error_class: type[OperationalError] = OperationalError
) -> OperationalError:
    driver_error = psycopg.errors.lookup(sqlstate)("") if sqlstate else psycopg.OperationalError()
    return error_class("SELECT 1", {}, driver_error)


@pytest.mark.parametrize(
    ("sqlstate", "failure"),
    [
        (None, Failure.OUTAGE),  # refused before any server answered: no SQLSTATE
        ("08006", Failure.OUTAGE),  # connection failure
        ("57P01", Failure.OUTAGE),  # admin shutdown
        ("57P03", Failure.OUTAGE),  # cannot connect now (starting up)
        ("53300", Failure.OUTAGE),  # too many connections
        ("40001", Failure.RETRY),  # serialization failure
        ("40P01", Failure.RETRY),  # deadlock
        ("55P03", Failure.RETRY),  # lock not available
        ("22012", Failure.PERMANENT),  # division by zero: the statement's fault
    ],
)
def test_database_outages_and_lost_races(sqlstate: str | None, failure: Failure) -> None:
    assert failure_of(_database_error(sqlstate)) is failure


def test_a_broken_connection_is_an_outage_and_a_violated_constraint_is_not() -> None:
    assert failure_of(InterfaceError("SELECT 1", {}, psycopg.InterfaceError())) is Failure.OUTAGE
    invalidated = _database_error("23505")
    invalidated.connection_invalidated = True
    assert failure_of(invalidated) is Failure.OUTAGE
    duplicate = IntegrityError("INSERT", {}, psycopg.errors.lookup("23505")(""))
    assert failure_of(duplicate) is Failure.PERMANENT
    # Without a SQLSTATE, only a connection's error is an outage.
    assert failure_of(IntegrityError("INSERT", {}, Exception())) is Failure.PERMANENT


@pytest.mark.parametrize(
    "error",
    [
        PoolTimeoutError("QueuePool limit reached"),
        TimeoutError(),
        ConnectionRefusedError(),
        OSError("network unreachable"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_network_and_pool_failures_are_outages(error: Exception) -> None:
    assert failure_of(error) is Failure.OUTAGE


def test_anything_else_is_permanent() -> None:
    assert failure_of(ValueError("a bug")) is Failure.PERMANENT
    assert failure_of(KeyError("a bug")) is Failure.PERMANENT
