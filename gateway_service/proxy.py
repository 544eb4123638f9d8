"""Forwarding one request to the service behind the gateway: retries of idempotent requests,
each upstream's circuit breaker, and event streams relayed as they come (which headers travel
each way is `gateway_service.headers`).

All upstreams share one pooled aiohttp session, made at the first request inside the running
event loop and closed with the proxy (`Proxy.aclose`, when the service stops). aiohttp, not
httpx: the gateway sends one upstream request for every request it serves, and a loopback POST
costs the caller ~65 µs of CPU through aiohttp against ~550 µs through httpx (4,000 requests, 8
at a time). A request is retried only when repeating it cannot do anything twice: idempotent
methods, after a connection failure or a 502/503/504 answer. No answer hands a client an
upstream's address: a `Location` or `Content-Location` on an upstream's origin becomes the
gateway's own path.

An answer of type `text/event-stream` (server-sent events) is not read in full: the gateway
relays it chunk by chunk until either side closes it or the gateway shuts down. A request
that accepts one waits up to STREAM_IDLE_SECONDS for each chunk instead of the upstream
timeout (a live stream is quiet between heartbeats), and once its answer has begun it is
never sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Final

import aiohttp
from prometheus_client import Counter, Gauge
from yarl import URL

from choreo.errors import RetriableError
from gateway_service.domain import BreakerState, CircuitBreaker, GatewayError
from gateway_service.headers import LOCATION_HEADERS, ByteExactRequest, public_location

log = logging.getLogger(__name__)

# Connections to all upstreams together, in use at once.
MAX_CONNECTIONS: Final = 200
# How long an idle upstream connection is kept: less than the services' own idle limit
# (uvicorn's `timeout_keep_alive`, 5 s). With both at 5 s, a request sent on a connection just
# as the service closes it gets no answer, and a POST is not retried: a 502 (seen once in
# ~1,200 orders of `choreo bench` at concurrency 16). The client must give up first.
KEEPALIVE_EXPIRY_SECONDS: Final = 4.0
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRIED_STATUSES: Final = frozenset({502, 503, 504})
# Short: the gateway's /readyz asks every upstream, and must answer within its prober's timeout
# (1 s in `choreo up`) whatever state they are in.
HEALTH_TIMEOUT_SECONDS: Final = 0.5
EVENT_STREAM: Final = "text/event-stream"
# How long a relayed event stream may stay silent: the services' streams send a heartbeat
# every 15 s, so this is several missed in a row (the upstream or the path to it is gone).
STREAM_IDLE_SECONDS: Final = 60.0

UPSTREAM_REQUESTS = Counter(
    "gateway_upstream_requests",
    "Requests the gateway sent to upstream services (each attempt), by upstream and outcome.",
    ("upstream", "outcome"),
)
UPSTREAM_REFUSED = Counter(
    "gateway_upstream_refused",
    "Requests answered 503 at once because the upstream's circuit was open.",
    ("upstream",),
)
CIRCUIT_OPEN = Gauge(
    "gateway_upstream_circuit_open",
    "1 while the upstream's circuit breaker refuses requests (open or half-open), else 0.",
    ("upstream",),
)


class UpstreamError(GatewayError):
    """The upstream could not give an answer to pass on."""

    def __init__(self, upstream: str, message: str) -> None:
        super().__init__(f"the {upstream} service {message}")
        self.upstream = upstream


class UpstreamUnavailableError(UpstreamError, RetriableError):
    """Not reachable, or its circuit is open: try again after `retry_after` seconds."""

    def __init__(self, upstream: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(upstream, message)
        self.retry_after = retry_after


class InvalidRequestError(UpstreamError):
    """The client's request cannot be sent on as HTTP (a header value HTTP/1.1 forbids)."""


class UpstreamTimeoutError(UpstreamError):
    """Reached, but it did not answer in time (the request may still have been applied)."""


class UpstreamProtocolError(UpstreamError):
    """The connection broke or the answer was not usable HTTP."""


@dataclass(frozen=True)
class Upstream:
    name: str
    base_url: str
    breaker: CircuitBreaker

    def url(self, raw_path: bytes, query: bytes) -> URL:
        """The upstream's URL of a path and query as the client sent them: their bytes go out
        unaltered (Latin-1, as `OutgoingRequest` holds headers), never re-quoted."""
        base = self.base_url.split("?", 1)[0].rstrip("/")
        target = base + raw_path.decode("latin-1")
        if query:
            target += "?" + query.decode("latin-1")
        return URL(target, encoded=True)


@dataclass(frozen=True)
class OutgoingRequest:
    """What the gateway sends upstream: the client's request, headers already rewritten.

    Header names and values are the bytes received, decoded as Latin-1 (as Starlette does), so
    they go out exactly as they came in, whatever bytes a client sent.
    """

    method: str
    raw_path: bytes
    query: bytes
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Answer:
    """An upstream's answer as the gateway passes it on: its status, its raw headers (location
    headers made public), and its body, read in full and decompressed, or, for an event stream
    (`is_event_stream`), `events`, the answer still to relay (`relay`), which closes it."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    content: bytes = b""
    events: aiohttp.ClientResponse | None = None


def is_event_stream(response: aiohttp.ClientResponse) -> bool:
    """A successful answer of server-sent events, relayed as it comes rather than read."""
    media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    return 200 <= response.status < 300 and media_type == EVENT_STREAM


async def relay(events: aiohttp.ClientResponse, stopping: asyncio.Event) -> AsyncIterator[bytes]:
    """The chunks of an event stream from upstream, as they arrive, until the upstream ends
    it, the connection to it breaks or goes quiet too long, or `stopping` is set (the gateway
    shuts down); the answer is closed then. A client that goes away cancels the iteration."""
    chunks = aiter(events.content.iter_any())
    stop = asyncio.ensure_future(stopping.wait())
    step: asyncio.Future[bytes] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(chunks))
            # A client that goes away cancels this relay mid-read: the read is cancelled or
            # fails as the answer is closed, and its error is expected, not "never retrieved".
            step.add_done_callback(_retrieve)
            await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, TimeoutError):
                    await step
                return
            try:
                chunk = step.result()
            except StopAsyncIteration:
                return
            except (aiohttp.ClientError, TimeoutError) as error:
                log.info("an event stream from %s ended: %s", events.url.path, _outcome(error))
                return
            yield chunk
    finally:
        stop.cancel()
        if step is not None:
            step.cancel()
        events.close()


def _retrieve(task: asyncio.Future[bytes]) -> None:
    if not task.cancelled():
        task.exception()


class _PoolWait:
    """Whether one request is waiting for a free connection of the gateway's pool: aiohttp
    times that wait out as it times out connecting, and only its tracing tells them apart.
    Tracing costs each request ~10 µs of CPU; without it, a gateway whose every connection is
    busy (event streams hold theirs) would count its own queue against the upstreams and open
    their circuits."""

    __slots__ = ("waiting",)

    def __init__(self) -> None:
        self.waiting = False


async def _queued(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceConnectionQueuedStartParams,
) -> None:
    if isinstance(context.trace_request_ctx, _PoolWait):
        context.trace_request_ctx.waiting = True


async def _dequeued(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceConnectionQueuedEndParams,
) -> None:
    if isinstance(context.trace_request_ctx, _PoolWait):
        context.trace_request_ctx.waiting = False


def _outcome(error: Exception, pool: _PoolWait | None = None) -> str:
    """What went wrong, as the metrics and the breaker's log name it."""
    if isinstance(error, aiohttp.ConnectionTimeoutError) and pool is not None and pool.waiting:
        return "pool_timeout"  # the gateway's own pool had no free connection
    if isinstance(error, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return "connect_error"  # the request never reached the upstream
    if isinstance(error, TimeoutError):
        return "timeout"
    # Often a kept-alive connection the upstream had closed (it restarted, say), or an answer
    # that is not HTTP.
    return "protocol_error"


# How /readyz names each outcome of a health check (`ConnectError` as it read with httpx).
_HEALTH_FAILURES: Final = {
    "pool_timeout": "PoolTimeout",
    "connect_error": "ConnectError",
    "timeout": "Timeout",
    "protocol_error": "ProtocolError",
}


class Proxy:
    """Sends requests to the upstreams through their breakers, retrying what is safe to."""

    def __init__(
        self,
        upstreams: Mapping[str, Upstream],
        *,
        timeout_seconds: float,
        connect_timeout_seconds: float,
        retries: int = 2,
        backoff_seconds: float = 0.1,
    ) -> None:
        """`timeout_seconds` bounds each read of an answer, `connect_timeout_seconds` connecting
        to an upstream, and the two together the wait for a free connection and the connecting
        after it."""
        self.upstreams = dict(upstreams)
        self._retries = retries
        self._backoff_seconds = backoff_seconds
        # aiohttp bounds the wait for a free connection and the connecting together (`connect`),
        # and the connecting alone (`sock_connect`); a read, each read (`sock_read`). No total:
        # an event stream lasts as long as it lasts.
        self._timeout = aiohttp.ClientTimeout(
            connect=timeout_seconds + connect_timeout_seconds,
            sock_connect=connect_timeout_seconds,
            sock_read=timeout_seconds,
        )
        self._stream_timeout = aiohttp.ClientTimeout(
            connect=self._timeout.connect,
            sock_connect=connect_timeout_seconds,
            sock_read=max(timeout_seconds, STREAM_IDLE_SECONDS),
        )
        # Made inside the running event loop, at the first request (aiohttp binds it to the loop).
        self._session: aiohttp.ClientSession | None = None
        for name in self.upstreams:
            CIRCUIT_OPEN.labels(name).set(0)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            tracing = aiohttp.TraceConfig()
            tracing.on_connection_queued_start.append(_queued)
            tracing.on_connection_queued_end.append(_dequeued)
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=MAX_CONNECTIONS,
                    keepalive_timeout=KEEPALIVE_EXPIRY_SECONDS,
                    # Looked up for each new connection: a service that restarts at a new
                    # address is reached there at once, not after a cached lookup expires.
                    use_dns_cache=False,
                ),
                # An upstream's cookies are its client's, never stored for the next one.
                cookie_jar=aiohttp.DummyCookieJar(),
                request_class=ByteExactRequest,
                # aiohttp adds `Accept: */*`, `Accept-Encoding: gzip, deflate` (it decompresses
                # what the upstream compressed) and its `User-Agent` unless the client sent its
                # own, as httpx did, but a `Content-Type` the client did not send, never.
                skip_auto_headers=("Content-Type",),
                trace_configs=[tracing],
                trust_env=False,  # the services are reached directly, whatever proxy is set
            )
            # aiohttp resends an idempotent request once by itself when its connection drops
            # (a switch its own test client turns off the same way): off, so that the retries
            # in `forward` are the only ones, counted, backed off and seen by the breaker.
            session._retry_connection = False
            self._session = session
        return self._session

    async def forward(self, upstream: str, request: OutgoingRequest) -> Answer:
        """The upstream's answer, read in full, except an event stream (`is_event_stream`):
        that is returned unread, for the caller to relay (`relay`), which closes it. Raises an
        `UpstreamError` when there is no answer.

        A 502/503/504 answer that is still one after the retries is returned as it is: the
        upstream's own error says more than the gateway could.
        """
        target = self.upstreams[upstream]
        attempts = 1 + (self._retries if request.method in IDEMPOTENT_METHODS else 0)
        timeout = self._timeout_of(request)
        for attempt in range(1, attempts + 1):
            can_retry = attempt < attempts
            if not target.breaker.allow():
                UPSTREAM_REFUSED.labels(upstream).inc()
                raise UpstreamUnavailableError(
                    upstream,
                    "is failing; requests to it are paused",
                    retry_after=target.breaker.retry_after(),
                )
            pool = _PoolWait()
            try:
                answer = await self._send(target, request, timeout, pool)
            except (aiohttp.ClientError, TimeoutError) as error:
                outcome = _outcome(error, pool)
                if outcome == "pool_timeout":
                    # The gateway's own connection pool is exhausted: nothing is wrong upstream.
                    UPSTREAM_REQUESTS.labels(upstream, outcome).inc()
                    raise UpstreamUnavailableError(
                        upstream, "is busy (no free connection)"
                    ) from None
                self._failed(target, outcome)
                # A timed-out request may have been applied, and may be slow again: not retried.
                if can_retry and outcome != "timeout":
                    await self._back_off(attempt)
                    continue
                raise self._failure(target, outcome, error) from None
            except ValueError as error:
                # The request could not be written as HTTP/1.1 (a control character in a header
                # value, which aiohttp refuses): the client's doing, never the upstream's, so the
                # breaker does not count it.
                UPSTREAM_REQUESTS.labels(upstream, "invalid_request").inc()
                raise InvalidRequestError(
                    upstream, f"cannot be sent this request: {error}"
                ) from None
            if answer.status in RETRIED_STATUSES:
                self._failed(target, f"status_{answer.status}")
                if can_retry:
                    await self._back_off(attempt)
                    continue
                return answer
            self._succeeded(target)
            return answer
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _send(
        self,
        target: Upstream,
        request: OutgoingRequest,
        timeout: aiohttp.ClientTimeout,
        pool: _PoolWait,
    ) -> Answer:
        """One attempt: the answer, read in full unless it is an event stream."""
        response = await self._client().request(
            request.method,
            target.url(request.raw_path, request.query),
            headers=request.headers,
            data=request.body or None,
            allow_redirects=False,
            timeout=timeout,
            trace_request_ctx=pool,
        )
        headers = self._without_upstream_addresses(response.raw_headers)
        if is_event_stream(response):
            return Answer(response.status, headers, events=response)
        try:
            content = await response.read()
        finally:
            response.release()
        return Answer(response.status, headers, content)

    def _timeout_of(self, request: OutgoingRequest) -> aiohttp.ClientTimeout:
        """The upstream timeouts; for a request that accepts an event stream, a read timeout
        of STREAM_IDLE_SECONDS (each chunk of a stream is a read)."""
        accepts = ",".join(value for name, value in request.headers if name.lower() == "accept")
        if EVENT_STREAM in accepts.lower():
            return self._stream_timeout
        return self._timeout

    def _without_upstream_addresses(
        self, raw: Iterable[tuple[bytes, bytes]]
    ) -> tuple[tuple[bytes, bytes], ...]:
        """The answer's headers, its location headers rewritten by `public_location` (raw
        bytes read and written as Latin-1, as `response_headers` passes them on)."""
        headers: list[tuple[bytes, bytes]] = []
        for name, value in raw:
            if name.decode("latin-1").lower() not in LOCATION_HEADERS:
                headers.append((name, value))
                continue
            public = public_location(
                value.decode("latin-1"), [upstream.base_url for upstream in self.upstreams.values()]
            )
            if public is None:
                log.warning("dropped a %s header naming an upstream: %r", name.decode(), value)
            else:
                headers.append((name, public.encode("latin-1")))
        return tuple(headers)

    async def check_health(self, upstream: str) -> str | None:
        """None when the upstream's `/healthz` answers 200 within HEALTH_TIMEOUT_SECONDS (the
        breaker is not involved), else what went wrong: `ConnectError: ...`, `Timeout: ...`,
        `ProtocolError: ...`, `PoolTimeout: ...`, or the status it answered."""
        pool = _PoolWait()
        try:
            async with self._client().get(
                self.upstreams[upstream].url(b"/healthz", b""),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_SECONDS),
                trace_request_ctx=pool,
            ) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            return (
                f"{_HEALTH_FAILURES[_outcome(error, pool)]}: {str(error) or type(error).__name__}"
            )
        if response.status != 200:
            return f"Unhealthy: the {upstream} service answered {response.status} on /healthz"
        return None

    def _failure(self, target: Upstream, outcome: str, error: Exception) -> UpstreamError:
        if outcome == "timeout":
            return UpstreamTimeoutError(target.name, "did not answer in time")
        if outcome == "protocol_error":
            return UpstreamProtocolError(target.name, f"broke the connection ({error!r})")
        # With the circuit still closed the wait is 0, which the client is told as 1 s.
        return UpstreamUnavailableError(
            target.name, "is not reachable", retry_after=target.breaker.retry_after()
        )

    async def _back_off(self, attempt: int) -> None:
        await asyncio.sleep(self._backoff_seconds * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))

    def _failed(self, target: Upstream, outcome: str) -> None:
        UPSTREAM_REQUESTS.labels(target.name, outcome).inc()
        was = target.breaker.state
        target.breaker.record_failure()
        if was is not BreakerState.OPEN and target.breaker.state is BreakerState.OPEN:
            CIRCUIT_OPEN.labels(target.name).set(1)
            log.warning(
                "circuit to the %s service opened after %d consecutive failures (last: %s); "
                "requests to it are refused for %g s",
                target.name,
                target.breaker.consecutive_failures,
                outcome,
                target.breaker.cooldown_seconds,
            )

    def _succeeded(self, target: Upstream) -> None:
        UPSTREAM_REQUESTS.labels(target.name, "ok").inc()
        if target.breaker.state is not BreakerState.CLOSED:
            log.info("circuit to the %s service closed: it answers again", target.name)
        target.breaker.record_success()
        CIRCUIT_OPEN.labels(target.name).set(0)
