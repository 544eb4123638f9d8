"""The live stream of in-app notifications (server-sent events), on real PostgreSQL and the
broker, straight from the notification service and through the gateway: what arrives, what
a reconnect with Last-Event-ID gets, who sees what, and how streams end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import statistics
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime

import httpx

from choreo.auth import SigningKey
from choreo.testing import ServiceProcess, StartService, eventually, publish

from .conftest import (
    Sink,
    address,
    applied,
    new_id,
    order_confirmed,
    start_notification,
    user_registered,
)

STREAM = "/api/v1/notifications/stream"
TIMEOUT = 30.0  # generous: what "arrives" means in these tests


@dataclass(frozen=True)
class Message:
    """One server-sent message as a client dispatches it (an id-only one has no event)."""

    id: str | None
    event: str | None
    data: str | None
    received: float  # time.time() when its blank line arrived

    def notification(self) -> dict[str, object]:
        assert self.event == "notification"
        assert self.data is not None
        decoded: dict[str, object] = json.loads(self.data)
        return decoded


class EventStream:
    """An open stream, read in the background into a queue of messages."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.heartbeats = 0
        self.ended = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            async for line in self.response.aiter_lines():
                if line == "":
                    if fields:
                        await self.messages.put(
                            Message(
                                fields.get("id"),
                                fields.get("event"),
                                fields.get("data"),
                                time.time(),
                            )
                        )
                    fields = {}
                elif line.startswith(":"):
                    self.heartbeats += 1
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    async def next(self, timeout: float = TIMEOUT) -> Message:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def notifications(self, count: int, timeout: float = TIMEOUT) -> list[Message]:
        """The next `count` notification events (id-only messages skipped)."""
        found: list[Message] = []
        async with asyncio.timeout(timeout):
            while len(found) < count:
                message = await self.messages.get()
                if message.event is not None:
                    found.append(message)
        return found

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, last_event_id: str | None = None
) -> AsyncIterator[EventStream]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with client.stream("GET", STREAM, headers=headers, timeout=None) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        stream = EventStream(response)
        try:
            yield stream
        finally:
            await stream.close()


def _by_id(notifications: Iterable[dict[str, object]]) -> dict[object, dict[str, object]]:
    return {notification["id"]: notification for notification in notifications}


async def user_with_welcome(
    process: ServiceProcess, kafka_bootstrap: str, topics: str, name: str
) -> str:
    """A registered user whose welcome notification is in (so streams start after it)."""
    user_id = new_id()
    registered = user_registered(user_id, address(name), name.title())
    await publish(kafka_bootstrap, topics, registered)
    await eventually(lambda: applied(process, registered), f"{name} registered")
    return user_id


async def confirm_orders(
    process: ServiceProcess, kafka_bootstrap: str, topics: str, user_id: str, count: int
) -> None:
    """Publish `count` OrderConfirmed of the user's and wait until all are applied."""
    events = [order_confirmed(new_id(), user_id) for _ in range(count)]
    await publish(kafka_bootstrap, topics, *events)
    for event in events:
        await eventually(lambda e=event: applied(process, e), "order confirmed applied")


async def test_stream_from_now_resume_and_isolation(
    start_service: StartService,
    sink: Sink,
    signing_key: SigningKey,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    notification = start_notification(start_service, sink)
    ada = await user_with_welcome(notification, kafka_bootstrap, topics, "ada")
    bob = await user_with_welcome(notification, kafka_bootstrap, topics, "bob")

    async with notification.client(signing_key.issue(ada)) as client:
        [welcome] = (await client.get("/api/v1/notifications")).json()["items"]
        async with open_stream(client) as stream:
            # Without Last-Event-ID: from now, saying where "now" is (an id-only message).
            start = await stream.next()
            assert start.event is None
            assert start.data is None
            assert start.id is not None
            await publish(
                kafka_bootstrap,
                topics,
                order_confirmed(new_id(), bob),  # bob's: never on ada's stream
                order_confirmed(new_id(), ada),
            )
            [first] = await stream.notifications(1)
            assert int(first.id or "0") > int(start.id)
            page = (await client.get("/api/v1/notifications")).json()["items"]
            # Exactly as GET /notifications shows it.
            assert first.notification() == page[0]
            assert first.notification()["kind"] == "order_confirmed"
            assert [n["id"] for n in page[1:]] == [welcome["id"]]

        # Missed while disconnected: exactly those, in order, once, then live again.
        await confirm_orders(notification, kafka_bootstrap, topics, ada, 3)
        await confirm_orders(notification, kafka_bootstrap, topics, bob, 2)
        async with open_stream(client, last_event_id=first.id) as stream:
            resumed = await stream.notifications(3)
            await publish(kafka_bootstrap, topics, order_confirmed(new_id(), ada))
            [live] = await stream.notifications(1)
            # Nothing more: bob's never, ada's not twice (a quiet stream's next message).
            with contextlib.suppress(TimeoutError):
                extra = await asyncio.wait_for(stream.notifications(1), 2.0)
                raise AssertionError(f"unexpected {extra}")
        ids = [int(m.id or "0") for m in [*resumed, live]]
        assert ids == sorted(set(ids))
        assert ids[0] > int(first.id or "0")
        page = (await client.get("/api/v1/notifications")).json()["items"]
        # The stream's order is commit order; the list's, the time each transaction began
        # (handlers of several partitions run at once): the same notifications, each once.
        assert _by_id(m.notification() for m in [*resumed, live]) == _by_id(page[:4])

        # Last-Event-ID 0: everything of ada's, oldest first, welcome included.
        async with open_stream(client, last_event_id="0") as stream:
            everything = await stream.notifications(len(page))
        assert _by_id(m.notification() for m in everything) == _by_id(page)
        assert len(everything) == len(page)


async def test_stream_refusals_and_cleanup(
    start_service: StartService,
    sink: Sink,
    signing_key: SigningKey,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    notification = start_notification(start_service, sink)
    ada = await user_with_welcome(notification, kafka_bootstrap, topics, "ada")
    async with notification.client() as anonymous:
        response = await anonymous.get(STREAM)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"
    async with notification.client(signing_key.issue(ada)) as client:
        for bad in ("abc", "-1", "1.5", "99999999999999999999999", "١٢".encode()):
            response = await client.get(STREAM, headers={"Last-Event-ID": bad})
            assert response.status_code == 400, bad
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"]["code"] == "invalid_last_event_id"

        async def subscribers() -> float:
            metrics = (await client.get("/metrics")).text
            found = re.search(
                r'^choreo_listener_subscribers\{channel="notification_stream"\} (\S+)$',
                metrics,
                re.MULTILINE,
            )
            return float(found.group(1)) if found else -1.0

        # Clients that go away leave nothing behind.
        async with contextlib.AsyncExitStack() as streams:
            for _ in range(3):
                stream = await streams.enter_async_context(open_stream(client))
                await stream.next()
            assert await subscribers() == 3.0

        async def none_left() -> bool:
            return await subscribers() == 0.0

        await eventually(none_left, "the closed streams' subscriptions gone")


async def test_a_stream_ends_with_its_token_and_a_foreign_id_resumes_from_now(
    start_service: StartService,
    sink: Sink,
    signing_key: SigningKey,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    """A stream lives no longer than the token it began with (its client reconnects with a
    fresh one); an id this user's stream never sent (higher than their latest) does not hide
    what comes next."""
    notification = start_notification(start_service, sink)
    ada = await user_with_welcome(notification, kafka_bootstrap, topics, "ada")
    short_lived = notification.client(signing_key.issue(ada, ttl_seconds=2))
    async with short_lived, open_stream(short_lived) as stream:
        await stream.next()
        await asyncio.wait_for(stream.ended.wait(), TIMEOUT)
    client = notification.client(signing_key.issue(ada))
    async with client, open_stream(client, last_event_id="9000000000") as stream:
        first = await stream.next()
        assert first.event is None
        assert first.id is not None
        assert int(first.id) < 9000000000  # the user's latest, not the foreign id
        await confirm_orders(notification, kafka_bootstrap, topics, ada, 1)
        [arrived] = await stream.notifications(1)
        assert arrived.notification()["kind"] == "order_confirmed"


async def test_service_stop_ends_open_streams(
    start_service: StartService,
    sink: Sink,
    signing_key: SigningKey,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    notification = start_notification(start_service, sink)
    ada = await user_with_welcome(notification, kafka_bootstrap, topics, "ada")
    async with (
        notification.client(signing_key.issue(ada)) as client,
        open_stream(client) as stream,
    ):
        await stream.next()
        started = time.monotonic()
        await asyncio.to_thread(notification.stop)
        stopped_in = time.monotonic() - started
        await asyncio.wait_for(stream.ended.wait(), TIMEOUT)
    # uvicorn would wait its whole grace period (10 s) for a stream that never ends.
    assert stopped_in < 8.0, f"stopping took {stopped_in:.1f} s with a stream open"


async def test_stream_through_the_gateway(
    start_service: StartService,
    sink: Sink,
    signing_key: SigningKey,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    notification = start_notification(start_service, sink)
    # A short upstream timeout: the stream must outlive it while quiet.
    gateway = start_service("gateway", GATEWAY_UPSTREAM_TIMEOUT_SECONDS="1")
    ada = await user_with_welcome(notification, kafka_bootstrap, topics, "ada")
    bob = await user_with_welcome(notification, kafka_bootstrap, topics, "bob")
    from_publish: list[float] = []
    from_row: list[float] = []
    async with gateway.client(signing_key.issue(ada)) as client:
        async with open_stream(client) as stream:
            await stream.next()
            await asyncio.sleep(2.5)  # quiet for longer than the gateway's upstream timeout
            for _ in range(20):
                await publish(kafka_bootstrap, topics, order_confirmed(new_id(), bob))
                await publish(kafka_bootstrap, topics, order_confirmed(new_id(), ada))
                published = time.time()
                [message] = await stream.notifications(1)
                created = datetime.fromisoformat(str(message.notification()["created_at"]))
                from_publish.append(message.received - published)
                from_row.append(message.received - created.timestamp())
            last_id = message.id
        print(
            "\nSSE through the gateway, 20 notifications: from the OrderConfirmed publish "
            f"p50 {statistics.median(from_publish) * 1000:.0f} ms, "
            f"max {max(from_publish) * 1000:.0f} ms; from the row's transaction start "
            f"(an upper bound of from its commit) p50 {statistics.median(from_row) * 1000:.0f}"
            f" ms, max {max(from_row) * 1000:.0f} ms"
        )

        await confirm_orders(notification, kafka_bootstrap, topics, ada, 2)
        async with open_stream(client, last_event_id=last_id) as stream:
            resumed = await stream.notifications(2)
            with contextlib.suppress(TimeoutError):
                extra = await asyncio.wait_for(stream.notifications(1), 2.0)
                raise AssertionError(f"unexpected {extra}")
        page = (await client.get("/api/v1/notifications")).json()["items"]
        assert _by_id(m.notification() for m in resumed) == _by_id(page[:2])
        assert all(n["kind"] in ("order_confirmed", "welcome") for n in page)

        # The gateway's own shutdown ends the streams it relays, without its grace period.
        async with open_stream(client) as stream:
            await stream.next()
            started = time.monotonic()
            await asyncio.to_thread(gateway.stop)
            stopped_in = time.monotonic() - started
            await asyncio.wait_for(stream.ended.wait(), TIMEOUT)
    assert stopped_in < 8.0, f"stopping the gateway took {stopped_in:.1f} s with a stream open"
