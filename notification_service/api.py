"""The notification service's HTTP API: a user's own in-app notifications."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel

from choreo.deps import CurrentUser, Uow
from notification_service import handlers, queries
from notification_service.domain import NotificationNotFoundError

Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=500)]


class NotificationOut(BaseModel):
    id: str
    kind: str
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    next_cursor: str | None


router = APIRouter(prefix="/api/v1", tags=["notifications"])


@router.get("/notifications")
async def list_notifications(
    user: CurrentUser, uow: Uow, limit: Limit = 20, cursor: Cursor = None
) -> NotificationPage:
    async with uow:
        page, next_cursor = await queries.notifications_of(
            uow.session, user.user_id, limit=limit, cursor=cursor
        )
    items = [
        NotificationOut(
            id=str(n.id),
            kind=n.kind,
            title=n.title,
            body=n.body,
            created_at=n.created_at,
            read_at=n.read_at,
        )
        for n in page
    ]
    return NotificationPage(items=items, next_cursor=next_cursor)


@router.post("/notifications/{notification_id}/read", status_code=status.HTTP_204_NO_CONTENT)
async def mark_read(notification_id: str, user: CurrentUser, uow: Uow) -> Response:
    try:
        parsed = uuid.UUID(notification_id)
    except ValueError:
        raise NotificationNotFoundError(f"no notification {notification_id[:100]}") from None
    async with uow:
        await handlers.mark_read(uow, user.user_id, parsed)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
