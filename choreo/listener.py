"""One PostgreSQL `LISTEN` connection per process, fanned out in-process: each NOTIFY on the
channel wakes the subscribers of the key its payload names.

A payload reads `KEY:...` (or just `KEY`): the part before its last colon is the key. A wake-up
carries nothing but "look again": subscribers read what changed from the database, so a
notification missed while the connection was down loses nothing, since every subscriber is
woken when the connection is made again. `Service(listeners=...)` runs and stops listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterator
from typing import Any

import psycopg
from prometheus_client import Gauge

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0
"""The wait before connecting again after the listening connection failed."""

SUBSCRIBERS = Gauge(
    "choreo_listener_subscribers",
    "Subscribers a listener wakes (open streams, say), by channel.",
    ("channel",),
)


class Notifications:
    """The notifications a connection that LISTENs receives, waited for asleep.

    psycopg's `notifies()` wakes its event loop every 100 ms while it waits (its wait
    interval, kept so that a blocking program sees Ctrl-C), each time taking the socket out
    of the loop's poller and putting it back: every relay and listener of an idle service
    did so, ~10 times a second each. Here a wait is one reader on the socket, woken only when
    the server sends something. Notifications that arrive while the connection runs a
    statement are collected by psycopg as it reads the results (a notify handler), and libpq's
    own buffer is read before each wait, so none is missed.

    Only one coroutine may use the connection at a time, as with psycopg's own
    `notifies()`: a statement runs between waits, never during one.
    """

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn
        self._received: deque[psycopg.Notify] = deque()
        conn.add_notify_handler(self._received.append)

    async def next(self) -> psycopg.Notify:
        """The next notification, once the server has sent one. Raises
        psycopg.OperationalError when the connection is lost (or closed)."""
        self._read()
        while not self._received:
            await self._readable()
            self._read()
        return self._received.popleft()

    def close(self) -> None:
        """Stop collecting notifications (the connection may go on running statements)."""
        self._conn.remove_notify_handler(self._received.append)

    def _read(self) -> None:
        """Parse what the socket and libpq's buffer hold; the handler collects each notify."""
        if self._conn.closed:
            raise psycopg.OperationalError("the listening connection is closed")
        pgconn = self._conn.pgconn
        pgconn.consume_input()
        while (notify := pgconn.notifies()) is not None:
            if pgconn.notify_handler is not None:
                pgconn.notify_handler(notify)

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        readable = loop.create_future()
        fileno = self._conn.fileno()

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fileno, wake)
        try:
            await readable
        finally:
            loop.remove_reader(fileno)


class Listener:
    """Listens on `channel` for the whole process; `subscribe(key)` for a wake-up event."""

    def __init__(self, channel: str) -> None:
        if not channel.isidentifier():
            raise ValueError(f"{channel!r} is not a plain channel name")
        self.channel = channel
        self._subscribers: dict[str, set[asyncio.Event]] = {}
        self._stopping = asyncio.Event()
        SUBSCRIBERS.labels(channel).set(0)

    @property
    def stopped(self) -> bool:
        """True once `stop()` was called: subscribers should end what they serve."""
        return self._stopping.is_set()

    @property
    def subscriber_count(self) -> int:
        return sum(len(events) for events in self._subscribers.values())

    @contextlib.contextmanager
    def subscribe(self, key: str) -> Iterator[asyncio.Event]:
        """An event set by every NOTIFY for `key` (clear it before reading), at reconnection,
        and at `stop()`; dropped when the block ends."""
        woken = asyncio.Event()
        self._subscribers.setdefault(key, set()).add(woken)
        SUBSCRIBERS.labels(self.channel).inc()
        try:
            yield woken
        finally:
            SUBSCRIBERS.labels(self.channel).dec()
            events = self._subscribers.get(key)
            if events is not None:
                events.discard(woken)
                if not events:
                    del self._subscribers[key]

    def stop(self) -> None:
        """End `run()` and wake every subscriber (which then sees `stopped`)."""
        self._stopping.set()
        self._wake_all()

    async def run(self, conninfo: str) -> None:
        """Listen until `stop()`, connecting again (and waking everyone) after a failure."""
        while not self._stopping.is_set():
            try:
                await self._listen(conninfo)
            except (psycopg.OperationalError, OSError) as error:
                log.warning("listener on %s lost its connection: %s", self.channel, error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), RECONNECT_SECONDS)

    async def _listen(self, conninfo: str) -> None:
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        async with conn:
            await conn.execute(f"LISTEN {self.channel}")
            # Whatever was notified while no connection listened is read now.
            self._wake_all()
            receiving = asyncio.ensure_future(self._receive(conn))
            stopping = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (receiving, stopping):
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stopping
                if receiving.done() and not receiving.cancelled():
                    receiving.result()  # the connection's failure, for run() to handle
                else:
                    with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                        await receiving

    async def _receive(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        """Until the connection fails (psycopg.OperationalError) or the task is cancelled."""
        notifications = Notifications(conn)
        while True:
            notify = await notifications.next()
            key = notify.payload.rpartition(":")[0] or notify.payload
            for woken in self._subscribers.get(key, ()):
                woken.set()

    def _wake_all(self) -> None:
        for events in self._subscribers.values():
            for woken in events:
                woken.set()
