"""Access tokens no service accepts any more: those of deleted accounts and of ended sessions.

An access token lives up to 15 minutes and is verified by each service on its own (no call to
the user service), so ending an account or a session does not end its tokens by itself. Every
service with a database keeps the kit's `revoked_users` and `revoked_sessions` tables instead:
the user service writes the rows in the transaction that deletes the account or ends the
sessions (a logout, a password change or reset); every service that consumes events gets them
from UserDeleted and SessionsRevoked (`Service` subscribes it to `user.event` for those).
`current_principal` refuses a token of a revoked user, or one whose `sid` claim names a
revoked session (401), so within about `Revocations.refresh_seconds` of the event reaching a
service, those tokens stop working there; the payment service charges no order of a revoked
user. A revoked session's row is needed only until the last access token issued for it has
expired (no new one is issued: its refresh tokens are revoked too); then it may be deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.db import UnitOfWork
from choreo.events import Event
from choreo.records import SessionsRevoked, UserDeleted
from choreo.sql import Session
from choreo.tables import revoked_sessions, revoked_users

log = logging.getLogger(__name__)

REVOCATION_MARGIN = timedelta(minutes=5)
"""How much longer than the access-token lifetime a session's revocation is kept: the clocks of
the issuing process, of the verifiers (which allow 5 s of leeway) and of the databases may
differ a little, and keeping a row longer costs nothing."""


async def revoke(session: Session, user_id: str | uuid.UUID, at: datetime) -> None:
    """Record that `user_id`'s tokens are no longer accepted (idempotent)."""
    await session.execute(
        insert(revoked_users)
        .values(user_id=uuid.UUID(str(user_id)), revoked_at=at)
        .on_conflict_do_nothing()
    )


async def is_revoked(session: Session, user_id: str | uuid.UUID) -> bool:
    """Whether `user_id` was revoked, read in the caller's transaction."""
    found = await session.execute(
        select(revoked_users.c.user_id).where(revoked_users.c.user_id == uuid.UUID(str(user_id)))
    )
    return found.first() is not None


async def revoke_sessions(
    session: Session,
    user_id: str | uuid.UUID,
    session_ids: Iterable[str | uuid.UUID],
    *,
    reason: str,
    at: datetime,
    until: datetime,
) -> list[str]:
    """Record that the access tokens of `session_ids` are no longer accepted, until `until`
    (when the last of them expires); the ids that were not revoked already. Revocations past
    their `until` are deleted on the way, so the table holds about one access-token lifetime
    of them."""
    await session.execute(
        revoked_sessions.delete().where(revoked_sessions.c.expires_at <= func.now())
    )
    ids = list(dict.fromkeys(uuid.UUID(str(session_id)) for session_id in session_ids))
    if not ids:
        return []
    inserted = await session.execute(
        insert(revoked_sessions)
        .values(
            [
                {
                    "session_id": session_id,
                    "user_id": uuid.UUID(str(user_id)),
                    "reason": reason,
                    "revoked_at": at,
                    "expires_at": until,
                }
                for session_id in ids
            ]
        )
        .on_conflict_do_nothing()
        .returning(revoked_sessions.c.session_id)
    )
    new = {str(session_id) for (session_id,) in inserted}
    return [str(session_id) for session_id in ids if str(session_id) in new]


async def on_user_deleted(
    record: UserDeleted, uow: UnitOfWork, *, event: Event[UserDeleted]
) -> None:
    """The kit's handler of UserDeleted, in every consuming service."""
    await revoke(uow.session, record.user_id, event.time)


async def on_sessions_revoked(record: SessionsRevoked, uow: UnitOfWork) -> None:
    """The kit's handler of SessionsRevoked, in every consuming service."""
    await revoke_sessions(
        uow.session,
        record.user_id,
        list(record.session_ids),
        reason=record.reason,
        at=record.revoked_at,
        until=record.expires_at,
    )


SESSION_ENDED = {
    "logged_out": "the session was logged out",
    "password_changed": "the session ended when the account's password was changed",
    "password_reset": "the session ended when the account's password was reset",
    "reuse_detected": "the session ended: one of its refresh tokens was used twice",
}
"""What a refused token of a revoked session is told, by the reason the session ended."""


@dataclass(frozen=True)
class Revoked:
    """The revoked users and the revoked sessions (with why each ended), as read at one time."""

    users: frozenset[str] = frozenset()
    sessions: Mapping[str, str] = field(default_factory=dict)

    def refusal(self, user_id: str, session_id: str | None) -> str | None:
        """Why a token of `user_id` for `session_id` is refused, or None when it is not."""
        if user_id in self.users:
            return "the account was deleted"
        reason = self.sessions.get(session_id) if session_id is not None else None
        if reason is None:
            return None
        ended = SESSION_ENDED.get(reason, "the session was ended")
        return f"{ended}: log in again"


class Revocations:
    """The revocations, for checking each request without a query of its own.

    They are read again when older than `refresh_seconds` (one read at a time; the requests
    meanwhile use those at hand). A read that fails (the database down) keeps those read last
    and is tried again on the next request after `refresh_seconds`. Sessions whose revocation
    has expired (their tokens have) are not read.
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
        self._revoked = Revoked()
        self._read_at = float("-inf")
        self._reading: asyncio.Lock = asyncio.Lock()

    async def refusal(self, user_id: str, session_id: str | None) -> str | None:
        """Why a token of `user_id` for `session_id` is refused, or None when it is not."""
        if self._clock() - self._read_at >= self.refresh_seconds and not self._reading.locked():
            async with self._reading:
                await self._read()
        return self._revoked.refusal(user_id, session_id)

    async def _read(self) -> None:
        self._read_at = self._clock()
        try:
            async with self._engine.connect() as connection:
                users = await connection.execute(select(revoked_users.c.user_id))
                sessions = await connection.execute(
                    select(revoked_sessions.c.session_id, revoked_sessions.c.reason).where(
                        revoked_sessions.c.expires_at > func.now()
                    )
                )
        except Exception as error:  # those at hand stay; the next request tries again
            log.warning("cannot read the revocations (%s); keeping the last read", error)
            return
        self._revoked = Revoked(
            users=frozenset(str(user_id) for (user_id,) in users),
            sessions={str(session_id): reason for session_id, reason in sessions},
        )
