"""The live stream of a user's in-app notifications, as server-sent events.

Each event is one notification: `id` its `seq` (commit order, see tables.py), `event:
notification`, `data` the notification as `GET /notifications` shows it. A stream opened with
`Last-Event-ID: N` first sends every notification after N; one opened without starts from the
user's latest, and says so with an id-only message (which sets the client's last event id
without dispatching an event), so that a reconnect before any notification still resumes from
there. The stream wakes on the `notification_stream` NOTIFY and reads what is new from the
database, so a missed wake-up delays nothing past the next heartbeat and loses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from pydantic import TypeAdapter

from choreo.db import UnitOfWork
from choreo.listener import Listener
from notification_service import queries
from notification_service.domain import NotificationError
from notification_service.queries import NotificationView

CHANNEL: Final = "notification_stream"
"""What the notifications table's trigger NOTIFYs at commit, with `user_id:seq`."""

HEARTBEAT_SECONDS: Final = 5.0
"""A comment sent on a quiet stream, so that proxies keep it open and a dead client is found;
the database is read again then too. Under the gateway's read timeout (10 s): a client that
does not say `Accept: text/event-stream` (curl) gets no longer one, and a quiet stream must not
look dead to it."""

BATCH: Final = 100
RETRY_MILLISECONDS: Final = 1000
"""How long an EventSource waits before reconnecting (its default is ~3 s)."""

MAX_SEQ: Final = 2**63 - 1  # a bigint

_as_json = TypeAdapter(NotificationView)


class InvalidLastEventIdError(NotificationError):
    """The Last-Event-ID header is not an id this stream sent."""


def resume_after(last_event_id: str | None) -> int | None:
    """The `seq` a stream resumes after: the Last-Event-ID header's, or None without one.
    Raises `InvalidLastEventIdError` for anything but a non-negative integer."""
    if last_event_id is None:
        return None
    value = last_event_id.strip()
    if (
        not (value.isascii() and value.isdigit())
        or len(value) > len(str(MAX_SEQ))
        or int(value) > MAX_SEQ
    ):
        raise InvalidLastEventIdError(
            f"Last-Event-ID must be the id of an event this stream sent (digits), not "
            f"{last_event_id[:40]!r}"
        )
    return int(value)


async def server_sent_events(
    user_id: str,
    after: int | None,
    *,
    uow: UnitOfWork,
    listener: Listener,
    authorised: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """The user's stream, from after `after` (None: from now) until the listener stops, the
    client goes away (the response cancels the iteration then), or `authorised()`, asked at
    each wake-up and heartbeat, says the caller's token no longer holds."""
    with listener.subscribe(user_id) as woken:
        # Subscribed first: whatever commits from here on wakes this stream.
        latest = await queries.last_seq(uow, user_id)
        # Every id this user's stream sent is at most their latest seq: a higher one was not
        # (a client remembering another installation's), and resuming after it would hide
        # every notification until the sequence caught up. Such a stream starts from now.
        if after is None or after > latest:
            after = latest
        yield f"retry: {RETRY_MILLISECONDS}\nid: {after}\n\n"
        while not listener.stopped:
            if not await authorised():
                return
            woken.clear()
            batch = await queries.notifications_after(uow, user_id, after, limit=BATCH)
            for item in batch:
                after = item.seq
                data = _as_json.dump_json(item.notification).decode()
                yield f"id: {item.seq}\nevent: notification\ndata: {data}\n\n"
            if len(batch) == BATCH:
                continue
            try:
                await asyncio.wait_for(woken.wait(), HEARTBEAT_SECONDS)
            except TimeoutError:
                yield ": heartbeat\n\n"
