"""Async engine, sessions and the unit of work: the one place that commits.

Handlers add business rows through `uow.session` and events through `uow.publish(event)`;
leaving `async with uow:` commits both in one transaction, or neither.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from choreo.errors import ChoreoError

if TYPE_CHECKING:
    from choreo.events import Event
    from choreo.outbox import OutboxWriter

# The kit's own tables (outbox, inbox) live on this metadata; services keep their own.
kit_metadata = MetaData()


def create_engine(dsn: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """An async engine on psycopg 3 with a bounded pool that checks connections on checkout."""
    return create_async_engine(
        dsn,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        echo=echo,
    )


def sync_dsn(dsn: str) -> str:
    """A libpq connection string for the same database (for psycopg used directly)."""
    from sqlalchemy.engine import make_url

    return make_url(dsn).set(drivername="postgresql").render_as_string(hide_password=False)


class UnitOfWorkError(ChoreoError):
    """The unit of work was used outside its `async with` block."""


class UnitOfWork:
    """One transaction: business rows, outbox rows and inbox rows commit together."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        outbox: OutboxWriter | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._outbox = outbox
        self._session: AsyncSession | None = None
        self._pending: list[Event] = []

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise UnitOfWorkError("the unit of work is not open: use `async with uow:`")
        return self._session

    def publish(self, event: Event) -> None:
        """Queue `event` for the outbox; it is written with the rest of the transaction."""
        if self._outbox is None:
            raise UnitOfWorkError("this unit of work has no outbox to publish to")
        self.session  # noqa: B018 - raises when the unit of work is not open
        self._pending.append(event)

    async def __aenter__(self) -> Self:
        if self._session is not None:
            raise UnitOfWorkError("the unit of work is already open")
        self._session = self._sessionmaker()
        self._pending = []
        await self._session.begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self.session
        try:
            if exc_type is None:
                if self._pending and self._outbox is not None:
                    await self._outbox.write(session, self._pending)
                await session.commit()
            else:
                await session.rollback()
        finally:
            self._pending = []
            self._session = None
            await session.close()


UnitOfWorkFactory = Callable[[], UnitOfWork]


def unit_of_work_factory(
    engine: AsyncEngine, outbox: OutboxWriter | None = None
) -> UnitOfWorkFactory:
    """A factory of fresh units of work on `engine` (one per handler call or request)."""
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False, autobegin=False)
    return lambda: UnitOfWork(sessionmaker, outbox)
