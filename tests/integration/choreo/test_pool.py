"""The kit's connection pool: a connection the server ended while it sat in the pool is never
handed to a transaction (choreo.db._check_quiet), without a round trip per checkout."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


async def _backend_pid(connection: AsyncConnection) -> int:
    return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_connection_the_server_ended_is_replaced_at_checkout(engine: AsyncEngine) -> None:
    async with engine.connect() as first, engine.connect() as second:
        ended, killer = await _backend_pid(first), await _backend_pid(second)
    # Both are back in the pool; end one from outside, as a restart or an operator would.
    async with engine.connect() as connection:
        assert await _backend_pid(connection) in (ended, killer)
        await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": ended})
    await asyncio.sleep(0.2)  # the server's goodbye reaches the pooled socket

    # Every transaction after it gets a live connection and none fails.
    for _ in range(3):
        async with engine.connect() as connection:
            assert await _backend_pid(connection) != ended


async def test_a_quiet_connection_is_reused(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        first = await _backend_pid(connection)
    async with engine.connect() as connection:
        assert await _backend_pid(connection) == first


async def test_a_connection_that_got_a_message_while_idle_is_kept_when_it_answers(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as notifying:
        async with engine.connect() as listening:
            kept = await _backend_pid(listening)
            await listening.execute(text("LISTEN choreo_test_pool"))
            await listening.commit()
        # The listener is back in the pool, idle, when the notification reaches its socket.
        await notifying.execute(text("NOTIFY choreo_test_pool"))
        await notifying.commit()
    await asyncio.sleep(0.2)

    async with engine.connect() as first, engine.connect() as second:
        pids = {await _backend_pid(first), await _backend_pid(second)}
    assert kept in pids  # pinged, answered, kept: not thrown away for the message
