"""Read side of the notification service: a user's in-app notifications, newest first.

Pages are keyset-paginated on (created_at, id) with `choreo.pagination` cursors.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from choreo.pagination import decode_cursor, split_page
from notification_service.tables import notifications


@dataclass(frozen=True, slots=True)
class Notification:
    id: uuid.UUID
    kind: str
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None


async def notifications_of(
    session: AsyncSession, user_id: str, *, limit: int, cursor: str | None
) -> tuple[list[Notification], str | None]:
    """One page of the user's notifications, newest first, and the cursor of the next."""
    query = select(
        notifications.c.id,
        notifications.c.kind,
        notifications.c.title,
        notifications.c.body,
        notifications.c.created_at,
        notifications.c.read_at,
    ).where(notifications.c.user_id == user_id)
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(
            tuple_(notifications.c.created_at, notifications.c.id) < (created_at, last_id)
        )
    query = query.order_by(notifications.c.created_at.desc(), notifications.c.id.desc())
    fetched = [Notification(*row) for row in await session.execute(query.limit(limit + 1))]
    return split_page(
        fetched, limit, lambda notification: (notification.created_at, notification.id)
    )
