"""The admins' commands on the risk screening's allow- and block-lists."""

from __future__ import annotations

import uuid

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert

from choreo.db import UnitOfWork
from payment_service.risk import ListEntry, ListEntryExistsError, ListEntryNotFoundError
from payment_service.tables import risk_list_entries


async def add_list_entry(
    uow: UnitOfWork, entry: ListEntry, *, note: str | None, actor_id: str
) -> uuid.UUID:
    """Put `entry` on its list; returns its id. Raises ListEntryExistsError when the value is
    on a list already (take it off first to move it to the other)."""
    async with uow:
        created = await uow.session.execute(
            insert(risk_list_entries)
            .values(
                kind=entry.kind.value,
                value=entry.value,
                action=entry.action.value,
                note=note,
                created_by=actor_id,
            )
            .on_conflict_do_nothing(constraint="risk_list_entries_one_list")
            .returning(risk_list_entries.c.id)
        )
        entry_id = created.scalar_one_or_none()
    if entry_id is None:
        raise ListEntryExistsError(f"the {entry.kind.value} {entry.value!r} is on a list already")
    return uuid.UUID(str(entry_id))


async def remove_list_entry(uow: UnitOfWork, entry_id: uuid.UUID) -> None:
    """Take an entry off its list. Raises ListEntryNotFoundError for an unknown id."""
    async with uow:
        removed = await uow.session.execute(
            delete(risk_list_entries)
            .where(risk_list_entries.c.id == entry_id)
            .returning(risk_list_entries.c.id)
        )
        if removed.first() is None:
            raise ListEntryNotFoundError(f"no list entry {entry_id}")
