"""Read side of the notification service: a user's in-app notifications, newest first.

Pages are keyset-paginated; the cursor is the (created_at, id) pair of the page's last item,
opaque to clients (URL-safe base64 of JSON).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from notification_service.domain import NotificationError
from notification_service.tables import notifications


class InvalidCursorError(NotificationError):
    """A pagination cursor this service did not hand out."""


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
    page = [Notification(*row) for row in await session.execute(query.limit(limit + 1))]
    if len(page) <= limit:
        return page, None
    page = page[:limit]
    return page, encode_cursor(page[-1].created_at, page[-1].id)


def encode_cursor(created_at: datetime, item_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(item_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, item_id = json.loads(raw)
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None:
            raise ValueError("naive time")
        return when, uuid.UUID(item_id)
    except (binascii.Error, ValueError, TypeError, AttributeError):
        raise InvalidCursorError("the cursor is not one this service handed out") from None
