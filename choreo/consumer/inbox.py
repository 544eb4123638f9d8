"""The inbox: (consumer, event id) of every event a consumer applied, written in the same
transaction as the event's effects (the exactly-once tracking record; the table is
`choreo.tables.inbox_table`)."""

from __future__ import annotations

from collections.abc import Sequence

from choreo.db import UnitOfWork


async def claim(uow: UnitOfWork, consumer: str, event_id: str) -> bool:
    """Record that `consumer` applies `event_id` in this unit of work; False when it already
    had (the row exists, committed by an earlier transaction)."""
    connection = await uow.driver_connection()
    claimed = await connection.execute(_CLAIM, (consumer, event_id))
    return await claimed.fetchone() is not None


_CLAIM = (
    "INSERT INTO inbox (consumer, event_id) VALUES (%s, %s) "
    "ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id"
)


async def applied_among(uow: UnitOfWork, consumer: str, event_ids: Sequence[str]) -> set[str]:
    """Which of `event_ids` `consumer` has applied (committed inbox rows), in one query."""
    connection = await uow.driver_connection()
    found = await connection.execute(_APPLIED_AMONG, (consumer, list(event_ids)))
    return {row[0] for row in await found.fetchall()}


_APPLIED_AMONG = "SELECT event_id FROM inbox WHERE consumer = %s AND event_id = ANY(%s)"
