"""Forwarding, against a loopback HTTP server that answers each request as the test says: what
reaches the upstream, retries, the breaker, error kinds, location headers, event streams."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY

from choreo.testing import free_port
from gateway_service import proxy as proxy_module
from gateway_service.domain import BreakerState, CircuitBreaker
from gateway_service.proxy import (
    EVENT_STREAM,
    InvalidRequestError,
    OutgoingRequest,
    Proxy,
    Upstream,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    relay,
)

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Seen:
    """One request as the upstream received it: raw path (with the query) and raw headers."""

    method: str
    raw_path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key.lower() == name]


@asynccontextmanager
async def proxy(
    answers: list[Answer],
    *,
    threshold: int = 10,
    timeout_seconds: float = 2.0,
    connect_timeout_seconds: float = 1.0,
    host: str = "127.0.0.1",
) -> AsyncIterator[tuple[Proxy, list[Seen], CircuitBreaker]]:
    """A proxy to one upstream (`order`, at `host`) whose n-th request gets `answers[n]`; also
    the requests it received."""
    seen: list[Seen] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen.append(Seen(request.method, request.raw_path, list(request.raw_headers), body))
        return await answers[len(seen) - 1](request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with TestServer(app, host="127.0.0.1") as server:
        breaker = CircuitBreaker(failure_threshold=threshold, cooldown_seconds=30.0)
        forwarding = Proxy(
            {"order": Upstream("order", f"http://{host}:{server.port}", breaker)},
            timeout_seconds=timeout_seconds,
            connect_timeout_seconds=connect_timeout_seconds,
            backoff_seconds=0.001,
        )
        try:
            yield forwarding, seen, breaker
        finally:
            await forwarding.aclose()


def outgoing(
    method: str = "GET", *, body: bytes = b"", headers: list[tuple[str, str]] | None = None
) -> OutgoingRequest:
    return OutgoingRequest(
        method=method,
        raw_path=b"/api/v1/orders/a%2Fb",
        query=b"limit=5&cursor=x%20y",
        headers=[("Authorization", "Bearer t"), ("Idempotency-Key", "k1"), *(headers or [])],
        body=body,
    )


def status(code: int) -> Answer:
    async def respond(request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": code}, status=code)

    return respond


async def hang_up(request: web.Request) -> web.StreamResponse:
    """The connection drops before any answer (a service restarting)."""
    assert request.transport is not None
    request.transport.close()
    return web.Response()


async def not_http(request: web.Request) -> web.StreamResponse:
    """Something answers that does not speak HTTP."""
    assert request.transport is not None
    request.transport.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    request.transport.close()
    return web.Response()


def slow(seconds: float) -> Answer:
    async def respond(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.json_response({"slow": True})

    return respond


def events(
    *chunks: bytes, then: asyncio.Event | None = None, closed: asyncio.Event | None = None
) -> Answer:
    """An event stream: `chunks`, then heartbeats every 50 ms until `then` is set (or the
    client goes, which sets `closed`), then its end."""

    async def respond(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": f"{EVENT_STREAM}; charset=utf-8"})
        await response.prepare(request)
        try:
            for chunk in chunks:
                await response.write(chunk)
            while then is not None and not then.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(then.wait(), 0.05)
                if not then.is_set():
                    await response.write(b": heartbeat\n\n")
        except (ConnectionResetError, asyncio.CancelledError):  # aiohttp's server does either
            if closed is not None:
                closed.set()
            raise
        await response.write_eof()
        return response

    return respond


def count(outcome: str) -> float:
    """How many attempts the metrics counted with `outcome`, for the `order` upstream."""
    labels = {"upstream": "order", "outcome": outcome}
    return REGISTRY.get_sample_value("gateway_upstream_requests_total", labels) or 0.0


# What reaches the upstream


async def test_the_request_arrives_as_the_client_sent_it() -> None:
    async with proxy([status(200)]) as (forwarding, seen, _):
        answer = await forwarding.forward("order", outgoing("POST", body=b'{"a": 1}'))
        port = forwarding.upstreams["order"].base_url.rsplit(":", 1)[1]
    assert answer.status == 200
    assert answer.content == b'{"status": 200}'
    (sent,) = seen
    assert sent.method == "POST"
    assert sent.raw_path == "/api/v1/orders/a%2Fb?limit=5&cursor=x%20y"
    assert sent.body == b'{"a": 1}'
    # The client's headers, and what any HTTP client adds (the same as httpx did, but for a
    # `Connection: keep-alive` that HTTP/1.1 implies): no `Content-Type` the client did not send.
    assert {name.lower() for name, _ in sent.headers} == {
        b"host",
        b"authorization",
        b"idempotency-key",
        b"accept",
        b"accept-encoding",
        b"user-agent",
        b"content-length",
    }
    assert sent.values(b"host") == [f"127.0.0.1:{port}".encode()]
    assert sent.values(b"authorization") == [b"Bearer t"]
    assert sent.values(b"idempotency-key") == [b"k1"]
    assert sent.values(b"content-length") == [b"8"]
    assert sent.values(b"accept") == [b"*/*"]
    assert sent.values(b"accept-encoding")[0].startswith(b"gzip, deflate")


async def test_the_clients_own_values_replace_the_defaults() -> None:
    own = [
        ("Accept", EVENT_STREAM),
        ("User-Agent", "curl/8.5.0"),
        ("Content-Type", "application/json"),
    ]
    async with proxy([status(200)]) as (forwarding, seen, _):
        await forwarding.forward("order", outgoing("PUT", body=b"{}", headers=own))
    (sent,) = seen
    assert sent.values(b"accept") == [EVENT_STREAM.encode()]
    assert sent.values(b"user-agent") == [b"curl/8.5.0"]
    assert sent.values(b"content-type") == [b"application/json"]


@pytest.mark.parametrize(
    ("method", "body"),
    [("GET", b""), ("POST", b'{"a": 1}'), ("POST", b"x" * 100_000)],
    ids=["no body", "small body", "large body"],
)
async def test_headers_travel_byte_for_byte(method: str, body: bytes) -> None:
    """Header strings are the bytes received, decoded as Latin-1: non-ASCII bytes (Latin-1's
    `é`, UTF-8's `€`) reach the upstream as they were, however aiohttp writes the request."""
    latin1 = "caf\xe9".encode("latin-1")
    utf8 = "\u20ac 5".encode()
    headers = [("X-Note", latin1.decode("latin-1")), ("X-Price", utf8.decode("latin-1"))]
    async with proxy([status(200), status(200)]) as (forwarding, seen, _):
        for _ in range(2):  # on a new connection, then on the same one kept alive
            answer = await forwarding.forward("order", outgoing(method, body=body, headers=headers))
            assert answer.status == 200
    for sent in seen:
        assert sent.values(b"x-note") == [latin1]
        assert sent.values(b"x-price") == [utf8]
        assert sent.body == body


async def test_a_header_value_http_forbids_is_the_clients_error() -> None:
    async with proxy([status(200)], threshold=1) as (forwarding, seen, breaker):
        before = count("invalid_request")
        with pytest.raises(InvalidRequestError):
            await forwarding.forward("order", outgoing(headers=[("X-Anything", "a\x01b")]))
        # The upstream is fine, and still reached.
        assert (await forwarding.forward("order", outgoing())).status == 200
    assert count("invalid_request") == before + 1
    assert len(seen) == 1
    assert breaker.state is BreakerState.CLOSED


async def test_no_cookie_of_one_client_reaches_another() -> None:
    async def sets_a_cookie(request: web.Request) -> web.StreamResponse:
        response = web.json_response({})
        response.set_cookie("session", "of-the-first-client")
        return response

    # By name: a cookie jar keeps no cookie of an IP address.
    async with proxy([sets_a_cookie, status(200)], host="localhost") as (forwarding, seen, _):
        first = await forwarding.forward("order", outgoing())
        await forwarding.forward("order", outgoing())
    assert any(name.lower() == b"set-cookie" for name, _ in first.headers)  # passed on
    assert seen[1].values(b"cookie") == []


# Retries and the breaker


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"])
async def test_idempotent_requests_are_retried_twice(method: str) -> None:
    async with proxy([status(503), hang_up, status(200)]) as (forwarding, seen, breaker):
        answer = await forwarding.forward("order", outgoing(method))
    assert answer.status == 200
    assert len(seen) == 3
    assert breaker.consecutive_failures == 0


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_other_requests_are_sent_once(method: str) -> None:
    async with proxy([status(503), status(200)]) as (forwarding, seen, _):
        answer = await forwarding.forward("order", outgoing(method))
    assert answer.status == 503  # the upstream's own answer, passed on
    assert len(seen) == 1

    async with proxy([hang_up, status(200)]) as (forwarding, seen, _):
        with pytest.raises(UpstreamProtocolError):
            await forwarding.forward("order", outgoing(method))
    assert len(seen) == 1


@pytest.mark.parametrize(("method", "attempts"), [("GET", 3), ("POST", 1)])
async def test_an_unreachable_upstream_is_retried_when_that_is_safe(
    method: str, attempts: int
) -> None:
    breaker = CircuitBreaker(failure_threshold=10, cooldown_seconds=30.0)
    nowhere = Upstream("order", f"http://127.0.0.1:{free_port()}", breaker)  # nothing listens
    forwarding = Proxy(
        {"order": nowhere}, timeout_seconds=2.0, connect_timeout_seconds=1.0, backoff_seconds=0.001
    )
    before = count("connect_error")
    try:
        with pytest.raises(UpstreamUnavailableError, match="not reachable"):
            await forwarding.forward("order", outgoing(method))
    finally:
        await forwarding.aclose()
    assert count("connect_error") == before + attempts
    assert breaker.consecutive_failures == attempts


async def test_the_last_failing_answer_is_passed_on_after_the_retries() -> None:
    async with proxy([status(502), status(504), status(503)]) as (forwarding, seen, _):
        assert (await forwarding.forward("order", outgoing())).status == 503
    assert len(seen) == 3


async def test_other_errors_from_the_upstream_are_answers_not_failures() -> None:
    answers = [status(500), status(404), status(409)]
    async with proxy(answers, threshold=1) as (forwarding, seen, breaker):
        for expected in (500, 404, 409):
            assert (await forwarding.forward("order", outgoing())).status == expected
    assert len(seen) == 3
    assert breaker.state is BreakerState.CLOSED


async def test_a_timeout_is_not_retried_and_says_so() -> None:
    async with proxy([slow(1.0), status(200)], timeout_seconds=0.2) as (forwarding, seen, breaker):
        with pytest.raises(UpstreamTimeoutError):
            await forwarding.forward("order", outgoing())
    assert len(seen) == 1
    assert breaker.consecutive_failures == 1


@pytest.mark.parametrize("answer", [hang_up, not_http], ids=["dropped", "not HTTP"])
async def test_a_broken_connection_is_a_protocol_error_when_it_cannot_be_retried(
    answer: Answer,
) -> None:
    async with proxy([answer]) as (forwarding, _, breaker):
        with pytest.raises(UpstreamProtocolError):
            await forwarding.forward("order", outgoing("POST"))
    assert breaker.consecutive_failures == 1


async def test_an_open_circuit_refuses_without_sending() -> None:
    async with proxy([hang_up] * 3, threshold=3) as (forwarding, seen, breaker):
        with pytest.raises(UpstreamProtocolError):
            await forwarding.forward("order", outgoing())
        assert len(seen) == 3
        assert breaker.state is BreakerState.OPEN

        with pytest.raises(UpstreamUnavailableError) as refused:
            await forwarding.forward("order", outgoing())
        assert len(seen) == 3  # not even tried
        assert refused.value.retry_after is not None
        assert 0 < refused.value.retry_after <= 30.0


async def test_a_full_pool_is_the_gateways_own_business(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every connection in use (an event stream holds one as long as it lasts), a request
    waits for one, then is answered "busy": the upstream is not counted as failing."""
    monkeypatch.setattr(proxy_module, "MAX_CONNECTIONS", 1)
    answers = [events(b"data: 1\n\n", then=asyncio.Event()), status(200)]
    async with proxy(answers, threshold=1, timeout_seconds=0.2, connect_timeout_seconds=0.1) as (
        forwarding,
        seen,
        breaker,
    ):
        stream = await forwarding.forward("order", outgoing(headers=[("Accept", EVENT_STREAM)]))
        assert stream.events is not None
        before = count("pool_timeout")
        try:
            with pytest.raises(UpstreamUnavailableError, match="busy"):
                await forwarding.forward("order", outgoing())
        finally:
            stream.events.close()
        assert count("pool_timeout") == before + 1
        assert breaker.state is BreakerState.CLOSED
        assert len(seen) == 1
        # The stream closed, its connection is free again.
        assert (await forwarding.forward("order", outgoing())).status == 200


# Answers


async def test_the_body_is_read_in_full_and_decompressed() -> None:
    document = b'{"items": []}' * 100

    async def compressed(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=gzip.compress(document),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )

    async with proxy([compressed]) as (forwarding, _, _):
        answer = await forwarding.forward("order", outgoing())
    assert answer.content == document
    assert answer.events is None


async def test_no_answer_carries_an_upstreams_address() -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        origin = f"http://{request.host}"
        return web.Response(
            status=307,
            headers=[
                ("Location", f"{origin}/api/v1/orders?limit=5"),
                ("Content-Location", f"{origin}/api/v1/orders/o-1"),
                ("X-Note", "caf\xe9"),
            ],
        )

    async def failing(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=503, headers={"Content-Location": f"http://{request.host}/healthz"}
        )

    named = (b"location", b"content-location", b"x-note")
    async with proxy([redirect]) as (forwarding, seen, _):
        answer = await forwarding.forward("order", outgoing())
    assert answer.status == 307  # passed on, not followed
    assert len(seen) == 1
    assert [(name, value) for name, value in answer.headers if name.lower() in named] == [
        (b"Location", b"/api/v1/orders?limit=5"),
        (b"Content-Location", b"/api/v1/orders/o-1"),
        (b"X-Note", "caf\xe9".encode()),  # as aiohttp's server wrote it, byte for byte
    ]

    async with proxy([failing], threshold=1) as (forwarding, _, _):
        answer = await forwarding.forward("order", outgoing("POST"))
    assert answer.status == 503
    assert (b"Content-Location", b"/healthz") in answer.headers


# Event streams


async def test_an_event_stream_is_relayed_as_it_comes_and_may_stay_quiet() -> None:
    then = asyncio.Event()
    stream = events(b"data: 1\n\n", then=then)
    async with proxy([stream], timeout_seconds=0.2) as (forwarding, seen, _):
        answer = await forwarding.forward("order", outgoing(headers=[("Accept", EVENT_STREAM)]))
        assert answer.status == 200
        assert answer.events is not None
        chunks = relay(answer.events, asyncio.Event())
        assert await anext(chunks) == b"data: 1\n\n"  # before the upstream has ended it
        # Quiet (but for heartbeats) for longer than the upstream timeout: still relayed.
        await asyncio.sleep(0.5)
        then.set()
        rest = [chunk async for chunk in chunks]
    assert all(chunk.startswith(b": heartbeat") for chunk in rest)
    assert answer.events.closed
    assert len(seen) == 1


async def test_a_request_that_accepts_an_event_stream_may_wait_longer() -> None:
    async with proxy([slow(0.5)], timeout_seconds=0.2) as (forwarding, _, _):
        answer = await forwarding.forward("order", outgoing(headers=[("Accept", EVENT_STREAM)]))
    assert answer.status == 200
    assert answer.events is None  # not a stream after all: read in full
    assert answer.content == b'{"slow": true}'


async def test_a_failed_event_stream_is_read_as_any_answer() -> None:
    async def refused(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, body=b"data: nothing\n\n", content_type=EVENT_STREAM)

    async with proxy([refused]) as (forwarding, _, _):
        answer = await forwarding.forward("order", outgoing(headers=[("Accept", EVENT_STREAM)]))
    assert (answer.status, answer.events, answer.content) == (404, None, b"data: nothing\n\n")


async def test_a_stream_ends_when_the_gateway_stops_and_the_upstream_sees_it() -> None:
    closed = asyncio.Event()
    stream = events(b"data: 1\n\n", then=asyncio.Event(), closed=closed)
    async with proxy([stream]) as (forwarding, _, _):
        answer = await forwarding.forward("order", outgoing(headers=[("Accept", EVENT_STREAM)]))
        assert answer.events is not None
        stopping = asyncio.Event()
        chunks = relay(answer.events, stopping)
        assert await anext(chunks) == b"data: 1\n\n"
        stopping.set()
        await asyncio.wait_for(_drain(chunks), 2.0)
        await asyncio.wait_for(closed.wait(), 2.0)
    assert answer.events.closed


async def test_a_client_that_goes_away_closes_the_upstreams_stream() -> None:
    closed = asyncio.Event()
    stream = events(b"data: 1\n\n", then=asyncio.Event(), closed=closed)
    async with proxy([stream]) as (forwarding, _, _):
        answer = await forwarding.forward("order", outgoing(headers=[("Accept", EVENT_STREAM)]))
        assert answer.events is not None
        listening = asyncio.create_task(_drain(relay(answer.events, asyncio.Event())))
        await asyncio.sleep(0.2)
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        await asyncio.wait_for(closed.wait(), 2.0)
    assert answer.events.closed


async def test_a_stream_whose_connection_breaks_ends_and_is_not_sent_again() -> None:
    async def breaks(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": EVENT_STREAM})
        await response.prepare(request)
        await response.write(b"data: 1\n\n")
        await asyncio.sleep(0.1)
        assert request.transport is not None
        request.transport.close()
        return response

    async with proxy([breaks, status(200)]) as (forwarding, seen, _):
        answer = await forwarding.forward("order", outgoing(headers=[("Accept", EVENT_STREAM)]))
        assert answer.events is not None
        chunks = [chunk async for chunk in relay(answer.events, asyncio.Event())]
    assert chunks == [b"data: 1\n\n"]
    assert len(seen) == 1


# Health


async def test_health_checks_say_what_is_wrong() -> None:
    answers = [status(200), status(503), slow(1.0)]
    async with proxy(answers) as (forwarding, seen, breaker):
        assert await forwarding.check_health("order") is None
        assert await forwarding.check_health("order") == (
            "Unhealthy: the order service answered 503 on /healthz"
        )
        timed_out = await forwarding.check_health("order")
    assert timed_out is not None
    assert timed_out.startswith("Timeout")
    assert [sent.raw_path for sent in seen] == ["/healthz"] * 3
    assert breaker.consecutive_failures == 0  # the breaker is not involved

    nowhere = Upstream("order", f"http://127.0.0.1:{free_port()}", CircuitBreaker())
    forwarding = Proxy({"order": nowhere}, timeout_seconds=2.0, connect_timeout_seconds=1.0)
    try:
        unreachable = await forwarding.check_health("order")
    finally:
        await forwarding.aclose()
    assert unreachable is not None
    assert unreachable.startswith("ConnectError: ")


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    async for _ in chunks:
        pass
