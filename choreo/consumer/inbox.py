"""The inbox: (consumer, event id) of every event a consumer applied, written in the same
transaction as the event's effects (the exactly-once tracking record)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, PrimaryKeyConstraint, Table, Text, func
from sqlalchemy.dialects.postgresql import insert

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
    claimed = await uow.session.execute(
        insert(inbox_table)
        .values(consumer=consumer, event_id=event_id)
        .on_conflict_do_nothing()
        .returning(inbox_table.c.event_id)
    )
    return claimed.first() is not None
