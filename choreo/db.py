"""Async engine and the unit of work: the one place that commits.

Handlers add business rows through `uow.session` and events through `uow.publish(record)`;
leaving `async with uow:` commits both in one transaction, or neither.
"""

from __future__ import annotations

import select
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

import psycopg
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from choreo.errors import ChoreoError
from choreo.events import Event
from choreo.records import Record
from choreo.sql import Session, wrapped_error


class Outbox(Protocol):
    """Where a unit of work writes its events (`choreo.outbox.OutboxWriter`)."""

    async def write(
        self,
        connection: psycopg.AsyncConnection[tuple[object, ...]],
        events: Sequence[Event[Record]],
    ) -> None: ...


POOL_SIZE = 20
"""Connections a service's pool keeps once it has needed them (and half as many again while
busier). A connection beyond those kept is closed when returned, so a pool smaller than the
handlers and requests a service runs at once opens a PostgreSQL session (a backend started
and torn down) for every few of them. `choreo bench` at 16 sagas in flight, ~900 sagas: with
10 (and 10 more), 57 sessions in the inventory database and 89 in the notifications one; with
20, 21 and 32, about as many as are open at the end (18 and 20). Peak: 30 per service replica,
plus its independent pool and relay (issue 14)."""


def create_engine(dsn: str, *, pool_size: int = POOL_SIZE) -> AsyncEngine:
    """An async engine on psycopg 3 with a bounded pool that checks connections on checkout.

    The check costs no round trip (`_check_quiet`): SQLAlchemy's `pool_pre_ping` sends a
    `SELECT 1` on every checkout, ~0.25 ms of the service's CPU and a statement for PostgreSQL
    each time, and a step transaction checks out once (issue 14: ~30 checkouts per saga).
    """
    engine = create_async_engine(
        dsn,
        pool_size=pool_size,
        max_overflow=pool_size // 2,
        pool_recycle=1800,
    )
    event.listen(engine.sync_engine, "checkout", _check_quiet)
    return engine


def _check_quiet(dbapi_connection: Any, entry: ConnectionPoolEntry, _proxy: Any) -> None:
    """Refuse a pooled connection that the server closed while it was idle.

    PostgreSQL says nothing on an idle connection of a client that is not LISTENing, except
    when it ends it: a restart, `pg_terminate_backend` or `idle_session_timeout` sends an error
    message and closes the socket. So a quiet socket is taken as it is, and only one with bytes
    (or EOF) waiting is pinged with `SELECT 1`, as `pool_pre_ping` would ping every connection
    (a stray message, a TLS record, passes the ping and the connection is kept). A failed ping
    raises `DisconnectionError`: the pool drops the connection and checks out another (the
    pessimistic-disconnect recipe of SQLAlchemy's pooling docs). A peer that vanished without
    closing (a cut network) is not seen here: the statement fails, the pool is invalidated, and
    the consumer's retry or the client's next request goes on.
    """
    connection = entry.driver_connection
    if connection is None or connection.closed or connection.broken:
        raise DisconnectionError("the pooled connection is closed")
    poller = select.poll()
    poller.register(connection.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    if not poller.poll(0):
        return
    try:
        # Runs in the checkout's greenlet, like SQLAlchemy's own pre-ping.
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
    except Exception as error:
        raise DisconnectionError(f"the server closed the pooled connection: {error}") from error


def sync_dsn(dsn: str) -> str:
    """A libpq connection string for the same database (for psycopg used directly)."""
    from sqlalchemy.engine import make_url

    return make_url(dsn).set(drivername="postgresql").render_as_string(hide_password=False)


class UnitOfWorkError(ChoreoError):
    """The unit of work was used outside its `async with` block."""


class UnitOfWork:
    """One transaction: business rows, outbox rows and inbox rows commit together.

    It checks a connection out of the engine's pool and sends every statement on its psycopg
    connection (`session`, a `choreo.sql.Session`): the business rows through SQLAlchemy Core
    statements, the kit's inbox and outbox rows as plain SQL. psycopg opens the transaction at
    the first statement; leaving the block commits it, or rolls it back when the block raised,
    and returns the connection to the pool. A connection that failed as if the server had gone
    (an OperationalError with no SQLSTATE) is closed instead of returned.
    """

    def __init__(self, engine: AsyncEngine, outbox: Outbox | None = None) -> None:
        self._engine = engine
        self._outbox = outbox
        self._pooled: PoolProxiedConnection | None = None
        self._session: Session | None = None
        self._pending: list[Event[Record]] = []
        self._after_commit: list[Callable[[], None]] = []
        self._autocommit = False

    def autocommit(self) -> Self:
        """This unit, made to send each statement of its next `async with` block as a
        transaction of its own: for a block of one statement, which PostgreSQL applies
        atomically by itself, without the BEGIN and COMMIT round trips (two of three). In that
        block `publish` is refused: outbox rows must commit with what they announce. The
        block after it is a transaction again."""
        if self._session is not None:
            raise UnitOfWorkError("the unit of work is open already")
        self._autocommit = True
        return self

    @property
    def session(self) -> Session:
        if self._session is None:
            raise UnitOfWorkError("the unit of work is not open: use `async with uow:`")
        return self._session

    async def driver_connection(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        """The psycopg connection of this unit's transaction, for the kit's own statements
        (the inbox claim, the outbox rows), sent as plain SQL. What it writes commits or rolls
        back with the rest."""
        return self.session.driver_connection

    def publish(
        self, record: Record, *, traceparent: str | None = None, time: datetime | None = None
    ) -> Event[Record]:
        """Queue `record` for the outbox, in an envelope with a new id, `time` (now when None)
        and `traceparent`; it is written with the rest of the transaction. Returns the
        envelope (its id and time are what consumers will see)."""
        if self._outbox is None:
            raise UnitOfWorkError("this unit of work has no outbox to publish to")
        if self._autocommit:
            raise UnitOfWorkError("a unit of work in autocommit cannot publish")
        self.session  # noqa: B018 - raises when the unit of work is not open
        event = (
            Event(record, traceparent=traceparent)
            if time is None
            else Event(record, time=time, traceparent=traceparent)
        )
        self._pending.append(event)
        return event

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once this unit's transaction has committed, never when it rolls
        back: for what must follow only facts that happened (a metric), where a handler that
        fails and is retried would otherwise count its step twice."""
        self.session  # noqa: B018 - raises when the unit of work is not open
        self._after_commit.append(callback)

    async def __aenter__(self) -> Self:
        if self._session is not None:
            raise UnitOfWorkError("the unit of work is already open")
        pooled = await self._engine.raw_connection()
        driver: psycopg.AsyncConnection[tuple[Any, ...]] = pooled.driver_connection  # type: ignore[assignment]
        if self._autocommit:
            await driver.set_autocommit(True)  # client-side only: nothing is sent
        self._pooled = pooled
        self._session = Session(driver, self._engine.dialect)
        self._pending = []
        self._after_commit = []
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pooled, session = self._pooled, self.session
        assert pooled is not None
        connection = session.driver_connection
        gone = False
        committed = False
        try:
            if self._autocommit:
                # Each statement committed as it ran; what failed rolled back alone.
                committed = exc_type is None
                gone = isinstance(exc, DBAPIError) and exc.connection_invalidated
                if not gone and not connection.closed:
                    try:
                        await connection.set_autocommit(False)
                    except psycopg.Error:
                        gone = True
            elif exc_type is None:
                try:
                    if self._pending and self._outbox is not None:
                        await self._outbox.write(connection, self._pending)
                    await connection.commit()
                    committed = True
                except psycopg.Error as error:
                    gone = _server_gone(error)
                    raise wrapped_error("COMMIT", None, error) from error
            else:
                gone = isinstance(exc, DBAPIError) and exc.connection_invalidated
                if not gone and not connection.closed:
                    try:
                        await connection.rollback()
                    except psycopg.Error:
                        gone = True
        finally:
            callbacks, self._after_commit = self._after_commit, []
            self._pending = []
            self._autocommit = False
            self._session = None
            self._pooled = None
            await greenlet_spawn(pooled.invalidate if gone or connection.closed else pooled.close)
        if committed:
            for callback in callbacks:
                callback()


def _server_gone(error: psycopg.Error) -> bool:
    return (
        isinstance(error, psycopg.OperationalError | psycopg.InterfaceError) and not error.sqlstate
    )


UnitOfWorkFactory = Callable[[], UnitOfWork]


def unit_of_work_factory(engine: AsyncEngine, outbox: Outbox | None = None) -> UnitOfWorkFactory:
    """A factory of fresh units of work on `engine` (one per handler call or request)."""
    return lambda: UnitOfWork(engine, outbox)
