"""Users whose tokens no service accepts any more: deleted accounts.

An access token lives up to 15 minutes and is verified by each service on its own (no call to
the user service), so deleting an account does not end its tokens by itself. Every service
with a database keeps the kit's `revoked_users` table instead: the user service writes the row
in the transaction that deletes the account; every service that consumes events gets it from
UserDeleted (`Service` subscribes it to `user.event` for that). `current_principal` refuses
the token of a revoked user (401), so within about `Revocations.refresh_seconds` of the event
reaching a service, the user's tokens stop working there; the payment service charges no
order of a revoked user.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Column, DateTime, Table, func, select
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from choreo.db import UnitOfWork, kit_metadata
from choreo.events import Event

log = logging.getLogger(__name__)

revoked_users = Table(
    "revoked_users",
    kit_metadata,
    Column("user_id", UUID(as_uuid=True), primary_key=True),
    Column("revoked_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


async def revoke(session: AsyncSession, user_id: str | uuid.UUID, at: datetime) -> None:
    """Record that `user_id`'s tokens are no longer accepted (idempotent)."""
    await session.execute(
        insert(revoked_users)
        .values(user_id=uuid.UUID(str(user_id)), revoked_at=at)
        .on_conflict_do_nothing()
    )


async def is_revoked(session: AsyncSession, user_id: str | uuid.UUID) -> bool:
    """Whether `user_id` was revoked, read in the caller's transaction."""
    found = await session.execute(
        select(revoked_users.c.user_id).where(revoked_users.c.user_id == uuid.UUID(str(user_id)))
    )
    return found.first() is not None


async def on_user_deleted(event: Event, uow: UnitOfWork) -> None:
    """The kit's handler of UserDeleted, in every consuming service."""
    await revoke(uow.session, str(event.data["user_id"]), event.time)


class Revocations:
    """The revoked user ids, for checking each request without a query of its own.

    The set is read again when it is older than `refresh_seconds` (one read at a time; the
    requests meanwhile use the set at hand). A read that fails (the database down) keeps the
    set read last and is tried again on the next request after `refresh_seconds`.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._revoked: frozenset[str] = frozenset()
        self._read_at = float("-inf")
        self._reading: asyncio.Lock = asyncio.Lock()

    async def is_revoked(self, user_id: str) -> bool:
        if self._clock() - self._read_at >= self.refresh_seconds and not self._reading.locked():
            async with self._reading:
                await self._read()
        return user_id in self._revoked

    async def _read(self) -> None:
        self._read_at = self._clock()
        try:
            async with self._engine.connect() as connection:
                rows = await connection.execute(select(revoked_users.c.user_id))
        except Exception as error:  # the set at hand stays; the next request tries again
            log.warning("cannot read the revoked users (%s); keeping the last read", error)
            return
        self._revoked = frozenset(str(user_id) for (user_id,) in rows)
