"""The notification service's HTTP API: a user's own in-app notifications, listed and live."""

from __future__ import annotations

import uuid
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Header, Query, Response, status
from fastapi.responses import StreamingResponse

from choreo.deps import CurrentUser, StillAuthorised, Uow, listener
from choreo.listener import Listener
from choreo.pagination import InvalidCursorError
from notification_service import handlers, queries, stream
from notification_service.domain import NotificationNotFoundError
from notification_service.queries import NotificationPage
from notification_service.stream import InvalidLastEventIdError

# Domain errors whose message says it all; main.py hands these to the kit's error handler.
ERROR_STATUSES: Final[dict[type[Exception], tuple[int, str]]] = {
    NotificationNotFoundError: (404, "notification_not_found"),
    InvalidCursorError: (422, "invalid_cursor"),
    InvalidLastEventIdError: (400, "invalid_last_event_id"),
}

Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=500)]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID")]
StreamListener = Annotated[Listener, Depends(listener(stream.CHANNEL))]

router = APIRouter(prefix="/api/v1", tags=["notifications"])


@router.get("/notifications")
async def list_notifications(
    user: CurrentUser, uow: Uow, limit: Limit = 20, cursor: Cursor = None
) -> NotificationPage:
    return await queries.notifications_of(uow, user.user_id, limit=limit, cursor=cursor)


@router.get(
    "/notifications/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_notifications(
    user: CurrentUser,
    uow: Uow,
    notified: StreamListener,
    authorised: StillAuthorised,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """Server-sent events: each new notification of the caller's, as `GET /notifications`
    shows it, with its `seq` as the event id; `Last-Event-ID` resumes after that one. The
    stream ends when the caller's token expires or its session is revoked."""
    after = stream.resume_after(last_event_id)
    return StreamingResponse(
        stream.server_sent_events(
            user.user_id, after, uow=uow, listener=notified, authorised=authorised
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/notifications/{notification_id}/read", status_code=status.HTTP_204_NO_CONTENT)
async def mark_read(notification_id: str, user: CurrentUser, uow: Uow) -> Response:
    try:
        parsed = uuid.UUID(notification_id)
    except ValueError:
        raise NotificationNotFoundError(f"no notification {notification_id[:100]}") from None
    await handlers.mark_read(uow, user.user_id, parsed)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
