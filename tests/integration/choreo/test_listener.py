"""A LISTEN connection's notifications (choreo.listener.Notifications), on a real PostgreSQL:
each arrives once, whether it came while the connection waited or while it ran a statement,
and a lost connection is reported rather than waited on for ever."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
import pytest_asyncio

from choreo.listener import Notifications

CHANNEL = "choreo_test_listener"


@pytest_asyncio.fixture
async def conninfo(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest_asyncio.fixture
async def listening(conninfo: str) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
    conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    await conn.execute(f"LISTEN {CHANNEL}")
    yield conn
    await conn.close()


async def _notify(conninfo: str, *payloads: str) -> None:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        for payload in payloads:
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


async def test_a_waiting_connection_gets_each_notification_once_in_order(
    conninfo: str, listening: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    notifications = Notifications(listening)
    waiting = asyncio.ensure_future(notifications.next())
    await asyncio.sleep(0.1)
    assert not waiting.done()  # nothing was sent yet

    await _notify(conninfo, "1", "2", "3")

    received = [await asyncio.wait_for(waiting, 30)]
    received += [(await asyncio.wait_for(notifications.next(), 30)) for _ in range(2)]
    assert [n.payload for n in received] == ["1", "2", "3"]
    assert {n.channel for n in received} == {CHANNEL}
    # Nothing more: a fourth wait is still waiting.
    fourth = asyncio.ensure_future(notifications.next())
    await asyncio.sleep(0.1)
    assert not fourth.done()
    fourth.cancel()


async def test_notifications_that_came_during_a_statement_are_not_lost(
    conninfo: str, listening: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    notifications = Notifications(listening)
    await _notify(conninfo, "before")
    # The connection reads its socket for this statement's result, and the notification with it.
    cursor = await listening.execute("SELECT pg_sleep(0.2), 1")
    assert await cursor.fetchall() == [("", 1)]

    notify = await asyncio.wait_for(notifications.next(), 30)
    assert notify.payload == "before"


async def test_a_connection_ended_by_the_server_raises_instead_of_waiting(
    conninfo: str, listening: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    notifications = Notifications(listening)
    waiting = asyncio.ensure_future(notifications.next())
    await asyncio.sleep(0.1)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (listening.info.backend_pid,))

    with pytest.raises(psycopg.OperationalError):
        await asyncio.wait_for(waiting, 30)
