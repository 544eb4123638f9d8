"""The kit's root exception, its `retriable` flag and the mixins that set it, and what a failure
means for whoever meets it: give up, try again soon, or wait out an outage."""

from __future__ import annotations

from enum import StrEnum

import psycopg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError


class ChoreoError(Exception):
    """Root of every error the kit raises.

    `retriable` decides what a consumer does with a record whose handler raised it: try again
    (see `Failure`) or park it in the dead-letter topic at once (a record that can never be
    applied). A class says which by mixing in `RetriableError` or `NotRetriableError`; the root
    is not retriable.
    """

    retriable: bool = False


class RetriableError(ChoreoError):
    """Mixed into an error class whose cause may pass, in any order of bases (each is a
    `ChoreoError`, so the root's False never shadows it):
    `class HashingBusyError(UserError, RetriableError)`."""

    retriable = True


class NotRetriableError(ChoreoError):
    """Mixed into an error class that trying again cannot cure."""

    retriable = False


class TransientError(RetriableError):
    """Something outside the record failed and may come back (a database, the broker, a
    provider answering 5xx, 429 or not at all): the record is fine, so a consumer waits it out
    for as long as it lasts and never dead-letters the record for it."""


class NotReadyError(RetriableError):
    """The record needs a fact that has not arrived yet (another topic's record): worth a few
    more tries, then the record is dead-lettered, since the fact may never come."""


class PermanentError(NotRetriableError):
    """The input can never be applied as it is: trying again cannot help."""


class RejectedEventError(PermanentError):
    """An event the consumer will not act on: it contradicts the consumer's own facts (a payment
    of another amount than the order's), or it comes from a service that does not own its type.
    Dead-lettered at once, with a warning: forged, or a bug in its producer."""


class Failure(StrEnum):
    """What a failure calls for."""

    PERMANENT = "permanent"  # give up: dead-letter the record, answer 4xx/500
    RETRY = "retry"  # try again a bounded number of times (a lost race, a fact not seen yet)
    OUTAGE = "outage"  # a dependency is down: wait as long as it lasts; HTTP answers 503


# SQLSTATE classes of a database that is unreachable, shutting down or out of connections
# (PostgreSQL appendix A: 08 connection exception, 57P operator intervention, 53300 too many
# connections), and of a lost race worth another try (40001 serialization failure, 40P01
# deadlock, 55P03 lock not available).
_OUTAGE_SQLSTATES = ("08", "57P", "53300")
_RACE_SQLSTATES = ("40001", "40P01", "55P03")


def failure_of(error: BaseException) -> Failure:
    """Classify `error`; anything not known to pass is permanent.

    An error that carries a `retriable` flag of its own (the kit's, aiokafka's, any library's
    that follows the convention) is taken at its word: False is permanent, True an outage to
    wait out, or a bounded retry for `NotReadyError`. Without one, the database's and the
    network's errors say whether the failure may pass. A refused or broken database connection
    carries no SQLSTATE at all (psycopg raises OperationalError before any server answered), so
    an OperationalError or InterfaceError without one is an outage.
    """
    retriable = getattr(error, "retriable", None)
    if isinstance(retriable, bool):
        if not retriable:
            return Failure.PERMANENT
        return Failure.RETRY if isinstance(error, NotReadyError) else Failure.OUTAGE
    if isinstance(error, DBAPIError | psycopg.Error):
        # SQLAlchemy's wrapper, or psycopg's own error from the kit's plain-SQL statements.
        driver_error = error.orig if isinstance(error, DBAPIError) else error
        sqlstate: str = getattr(driver_error, "sqlstate", None) or ""
        invalidated = isinstance(error, DBAPIError) and error.connection_invalidated
        if invalidated or sqlstate.startswith(_OUTAGE_SQLSTATES):
            return Failure.OUTAGE
        if sqlstate.startswith(_RACE_SQLSTATES):
            return Failure.RETRY
        connection_class = isinstance(
            error,
            OperationalError | InterfaceError | psycopg.OperationalError | psycopg.InterfaceError,
        )
        return Failure.OUTAGE if connection_class and not sqlstate else Failure.PERMANENT
    if isinstance(error, PoolTimeoutError | TimeoutError | ConnectionError | OSError):
        return Failure.OUTAGE
    return Failure.PERMANENT
