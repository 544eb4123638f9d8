"""The kit's revocation store on real PostgreSQL: sessions revoked from the user service's
writes or from SessionsRevoked, read by `Revocations` at most once a refresh, forgotten once
their access tokens have all expired."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.avro import default_store
from choreo.db import unit_of_work_factory
from choreo.records import SessionsRevoked
from choreo.revocations import (
    Revocations,
    on_sessions_revoked,
    revoke,
    revoke_sessions,
    revoked_sessions,
)
from choreo.testing import records as make


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def new_id() -> str:
    return str(uuid.uuid4())


async def test_a_revoked_session_is_refused_once_read_and_other_sessions_are_not(
    engine: AsyncEngine,
) -> None:
    uow = unit_of_work_factory(engine)
    clock = Clock()
    revocations = Revocations(engine, refresh_seconds=1.0, clock=clock)
    user, laptop, phone = new_id(), new_id(), new_id()
    assert await revocations.refusal(user, laptop) is None  # read: nothing revoked yet

    now = datetime.now(UTC)
    async with uow() as work:
        ended = await revoke_sessions(
            work.session,
            user,
            [laptop, laptop],
            reason="logged_out",
            at=now,
            until=now + timedelta(minutes=20),
        )
    assert ended == [laptop]
    assert await revocations.refusal(user, laptop) is None  # the set read a moment ago
    clock.now += 1.0
    assert await revocations.refusal(user, laptop) == "the session was logged out: log in again"
    assert await revocations.refusal(user, phone) is None
    assert await revocations.refusal(user, None) is None

    # Revoking again names only the sessions not revoked before; a deleted user goes first.
    async with uow() as work:
        again = await revoke_sessions(
            work.session,
            user,
            [laptop, phone],
            reason="password_changed",
            at=now,
            until=now + timedelta(minutes=20),
        )
        await revoke(work.session, user, now)
    assert again == [phone]
    clock.now += 1.0
    assert await revocations.refusal(user, phone) == "the account was deleted"


async def test_a_revocation_past_its_expiry_is_not_read_and_is_deleted_by_the_next(
    engine: AsyncEngine,
) -> None:
    uow = unit_of_work_factory(engine)
    revocations = Revocations(engine, refresh_seconds=0.0)
    user, old, new = new_id(), new_id(), new_id()
    past = datetime.now(UTC) - timedelta(minutes=30)
    async with uow() as work:
        await revoke_sessions(
            work.session,
            user,
            [old],
            reason="logged_out",
            at=past,
            until=past + timedelta(minutes=20),
        )
    assert await revocations.refusal(user, old) is None  # its tokens have expired anyway
    now = datetime.now(UTC)
    async with uow() as work:
        await revoke_sessions(
            work.session,
            user,
            [new],
            reason="logged_out",
            at=now,
            until=now + timedelta(minutes=20),
        )
    async with engine.connect() as connection:
        kept = (await connection.execute(select(revoked_sessions.c.session_id))).scalars().all()
    assert [str(session_id) for session_id in kept] == [new]
    assert await revocations.refusal(user, new) is not None


async def test_sessions_revoked_applies_as_decoded_from_the_broker(engine: AsyncEngine) -> None:
    uow = unit_of_work_factory(engine)
    revocations = Revocations(engine, refresh_seconds=0.0)
    user, ended, live = new_id(), new_id(), new_id()
    now = datetime.now(UTC).replace(microsecond=0)  # what timestamp-millis keeps
    sent = make.sessions_revoked(
        user_id=user,
        session_ids=[ended],
        reason="password_reset",
        revoked_at=now,
        expires_at=now + timedelta(minutes=20),
    ).record
    store = default_store()
    _, datum = store.decode(store.encode(sent.type_name(), sent.to_avro()))
    decoded = SessionsRevoked.from_avro(datum)  # as consumers see it (UUIDs read back as text)
    assert decoded == sent
    for _ in range(2):  # applied twice (a redelivery without the inbox): the same
        async with uow() as work:
            await on_sessions_revoked(decoded, work)
    assert await revocations.refusal(user, ended) == (
        "the session ended when the account's password was reset: log in again"
    )
    assert await revocations.refusal(user, live) is None
