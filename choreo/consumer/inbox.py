"""The inbox: (consumer, event id) of every event a consumer applied, written in the same
transaction as the event's effects (the exactly-once tracking record)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, PrimaryKeyConstraint, Table, Text, func

from choreo.db import UnitOfWork, kit_metadata

inbox_table = Table(
    "inbox",
    kit_metadata,
    Column("consumer", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer", "event_id"),
)


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
