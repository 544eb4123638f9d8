"""Read side of the notification service: a user's in-app notifications, newest first, as the
API shows them.

Pages are keyset-paginated on (created_at, id) with `choreo.pagination` cursors; the live
stream reads a user's notifications oldest first, after the last `seq` it sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, tuple_

from choreo.db import UnitOfWork
from choreo.pagination import decode_cursor, split_page
from notification_service.tables import notifications


@dataclass(frozen=True, slots=True)
class NotificationView:
    id: str
    kind: str
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None


@dataclass(frozen=True, slots=True)
class NotificationPage:
    items: list[NotificationView]
    next_cursor: str | None


async def notifications_of(
    uow: UnitOfWork, user_id: str, *, limit: int, cursor: str | None
) -> NotificationPage:
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
    async with uow:
        rows = (await uow.session.execute(query.limit(limit + 1))).all()
    page, next_cursor = split_page(rows, limit, lambda row: (row.created_at, row.id))
    items = [
        NotificationView(
            id=str(row.id),
            kind=row.kind,
            title=row.title,
            body=row.body,
            created_at=row.created_at,
            read_at=row.read_at,
        )
        for row in page
    ]
    return NotificationPage(items, next_cursor)


@dataclass(frozen=True, slots=True)
class StreamedNotification:
    """A notification and its place in the user's stream (its SSE event id)."""

    seq: int
    notification: NotificationView


async def notifications_after(
    uow: UnitOfWork, user_id: str, after: int, *, limit: int
) -> list[StreamedNotification]:
    """The user's notifications with `seq` above `after`, oldest first, at most `limit`."""
    query = (
        select(
            notifications.c.seq,
            notifications.c.id,
            notifications.c.kind,
            notifications.c.title,
            notifications.c.body,
            notifications.c.created_at,
            notifications.c.read_at,
        )
        .where(notifications.c.user_id == user_id, notifications.c.seq > after)
        .order_by(notifications.c.seq)
        .limit(limit)
    )
    async with uow:
        rows = (await uow.session.execute(query)).all()
    return [
        StreamedNotification(
            row.seq,
            NotificationView(
                id=str(row.id),
                kind=row.kind,
                title=row.title,
                body=row.body,
                created_at=row.created_at,
                read_at=row.read_at,
            ),
        )
        for row in rows
    ]


async def last_seq(uow: UnitOfWork, user_id: str) -> int:
    """The `seq` of the user's latest notification; 0 when there is none."""
    query = select(func.coalesce(func.max(notifications.c.seq), 0)).where(
        notifications.c.user_id == user_id
    )
    async with uow:
        return int((await uow.session.execute(query)).scalar_one())
