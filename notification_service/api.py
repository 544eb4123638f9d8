"""The notification service's HTTP API: a user's own in-app notifications."""

from __future__ import annotations

import uuid
from typing import Annotated, Final

from fastapi import APIRouter, Query, Response, status

from choreo.deps import CurrentUser, Uow
from choreo.pagination import InvalidCursorError
from notification_service import handlers, queries
from notification_service.domain import NotificationNotFoundError
from notification_service.queries import NotificationPage

# Domain errors whose message says it all; main.py hands these to the kit's error handler.
ERROR_STATUSES: Final[dict[type[Exception], tuple[int, str]]] = {
    NotificationNotFoundError: (404, "notification_not_found"),
    InvalidCursorError: (422, "invalid_cursor"),
}

Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=500)]

router = APIRouter(prefix="/api/v1", tags=["notifications"])


@router.get("/notifications")
async def list_notifications(
    user: CurrentUser, uow: Uow, limit: Limit = 20, cursor: Cursor = None
) -> NotificationPage:
    return await queries.notifications_of(uow, user.user_id, limit=limit, cursor=cursor)


@router.post("/notifications/{notification_id}/read", status_code=status.HTTP_204_NO_CONTENT)
async def mark_read(notification_id: str, user: CurrentUser, uow: Uow) -> Response:
    try:
        parsed = uuid.UUID(notification_id)
    except ValueError:
        raise NotificationNotFoundError(f"no notification {notification_id[:100]}") from None
    await handlers.mark_read(uow, user.user_id, parsed)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
