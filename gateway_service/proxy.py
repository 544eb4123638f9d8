"""Forwarding one request to the service behind the gateway: which headers travel each way,
retries of idempotent requests, each upstream's circuit breaker, and event streams relayed as
they come.

All upstreams share one pooled `httpx.AsyncClient` (made and closed by the service, see
main.py). A request is retried only when repeating it cannot do anything twice: idempotent
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
from typing import Final
from urllib.parse import SplitResult, urlsplit

import httpx
from prometheus_client import Counter, Gauge

from choreo.errors import RetriableError
from gateway_service.domain import BreakerState, CircuitBreaker, GatewayError, client_address

log = logging.getLogger(__name__)

# Connections to all upstreams together, and idle ones kept for reuse.
MAX_CONNECTIONS: Final = 200
MAX_KEEPALIVE_CONNECTIONS: Final = 50
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

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# The gateway sets these itself on the way in; `accept-encoding` is left to the client, which
# decodes what the upstream compressed (the gateway answers uncompressed).
_SET_ON_THE_WAY_IN: Final = frozenset(
    {
        "host",
        "content-length",
        "accept-encoding",
        "x-request-id",
        "traceparent",
        "x-forwarded-for",
        "x-forwarded-proto",
        "forwarded",
        "x-real-ip",
    }
)
# Recomputed for the body the gateway sends back, or set by the gateway's own server.
_SET_ON_THE_WAY_OUT: Final = frozenset(
    {"content-length", "content-encoding", "date", "server", "x-request-id"}
)
# Answer headers holding a URI reference, which may name the upstream's own address.
LOCATION_HEADERS: Final = ("location", "content-location")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}

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


def http_client(*, timeout_seconds: float, connect_timeout_seconds: float) -> httpx.AsyncClient:
    """The pooled client to every upstream; whoever makes it closes it.

    It ignores proxy settings from the environment: the services are reached directly.
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_seconds, connect=connect_timeout_seconds),
        limits=httpx.Limits(
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
        ),
        trust_env=False,
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

    def url(self, raw_path: bytes, query: bytes) -> httpx.URL:
        base = httpx.URL(self.base_url)
        path = base.raw_path.split(b"?", 1)[0].rstrip(b"/") + raw_path
        return base.copy_with(raw_path=path + (b"?" + query if query else b""))


def public_location(value: str, upstreams: Iterable[Upstream]) -> str | None:
    """`value` (a `Location` or `Content-Location` from an upstream) as a client may see it.

    A URL on an upstream's origin (scheme-relative ones too) becomes the gateway path it is
    served at: the path under the upstream's base URL, with its query and fragment; on that
    origin but outside the base URL, or unreadable, it has no public spelling (None: drop it).
    Anything else (a path, a third party's URL) is left as it is.
    """
    try:
        target = urlsplit(value.strip())
        if not target.netloc:
            return value  # a reference on the same origin: the gateway's, to the client
        origin = _origin(target, default_scheme=None)
    except ValueError:
        return None
    for upstream in upstreams:
        base = urlsplit(upstream.base_url)
        if origin != _origin(base, default_scheme=base.scheme):
            continue
        prefix = base.path.rstrip("/")
        path = target.path or "/"
        if prefix and not (path == prefix or path.startswith(prefix + "/")):
            return None
        public = path[len(prefix) :] or "/"
        query = f"?{target.query}" if target.query else ""
        fragment = f"#{target.fragment}" if target.fragment else ""
        return f"{public}{query}{fragment}"
    return value


def _origin(url: SplitResult, *, default_scheme: str | None) -> tuple[str, int | None]:
    """Host and port of `url` (the scheme's default port when none is written); a URL without
    a scheme takes `default_scheme`'s. Raises ValueError for a port that is not one."""
    scheme = url.scheme.lower() or default_scheme
    port = url.port or _DEFAULT_PORTS.get(scheme or "")
    return ((url.hostname or "").lower(), port)


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


def request_headers(
    incoming: Iterable[tuple[str, str]],
    *,
    peer: str | None,
    scheme: str,
    trust_forwarded: bool,
    request_id: str | None,
    traceparent: str | None,
) -> list[tuple[str, str]]:
    """The client's end-to-end headers, plus the request id, the gateway's span of the trace,
    and where the request came from: `X-Forwarded-*`, and `X-Real-IP`, the one client address
    the gateway counts the request against (`client_address`), which the order service keeps
    for the payment service's risk screening. A client's own `X-Real-IP` is dropped."""
    # A field value has no leading or trailing whitespace (RFC 9110 §5.5: the OWS around it is
    # not part of it); sent on as received, `Name: a ` made the upstream connection refuse the
    # request, and the breaker count a client's header as the upstream failing.
    incoming = [(name, value.strip(" \t")) for name, value in incoming]
    named_by_connection = _connection_tokens(incoming)
    headers = [
        (name, value)
        for name, value in incoming
        if (lowered := name.lower()) not in HOP_BY_HOP
        and lowered not in _SET_ON_THE_WAY_IN
        and lowered not in named_by_connection
    ]
    received = {name.lower(): value for name, value in incoming}
    forwarded_for = peer or "unknown"
    proto = scheme
    if trust_forwarded:
        if received.get("x-forwarded-for"):
            forwarded_for = f"{received['x-forwarded-for']}, {forwarded_for}"
        proto = received.get("x-forwarded-proto") or proto
    client = client_address(peer, received.get("x-forwarded-for"), trust_forwarded=trust_forwarded)
    headers += [
        ("X-Forwarded-For", forwarded_for),
        ("X-Forwarded-Proto", proto),
        ("X-Real-IP", client),
    ]
    if request_id:
        headers.append(("X-Request-ID", request_id))
    if traceparent:
        headers.append(("traceparent", traceparent))
    return headers


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The upstream's answer headers that the client should see (the raw ones, decoded as
    Latin-1, so that they reach the client byte for byte)."""
    items = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]
    named_by_connection = _connection_tokens(items)
    return [
        (name, value)
        for name, value in items
        if (lowered := name.lower()) not in HOP_BY_HOP
        and lowered not in _SET_ON_THE_WAY_OUT
        and lowered not in named_by_connection
    ]


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    """Headers the sender declared hop-by-hop by naming them in `Connection`."""
    return {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
        if token.strip()
    }


def is_event_stream(response: httpx.Response) -> bool:
    """A successful answer of server-sent events, relayed as it comes rather than read."""
    media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    return response.is_success and media_type == EVENT_STREAM


async def relay(answer: httpx.Response, stopping: asyncio.Event) -> AsyncIterator[bytes]:
    """The chunks of an event stream from upstream, as they arrive, until the upstream ends
    it, the connection to it breaks or goes quiet too long, or `stopping` is set (the gateway
    shuts down); the answer is closed then. A client that goes away cancels the iteration."""
    chunks = aiter(answer.aiter_bytes())
    stop = asyncio.ensure_future(stopping.wait())
    try:
        while True:
            step = asyncio.ensure_future(anext(chunks))
            # A client that goes away cancels this relay mid-read: the read then fails as the
            # answer is closed, and its error is expected, not "never retrieved".
            step.add_done_callback(_retrieve)
            await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                    await step
                return
            try:
                chunk = step.result()
            except StopAsyncIteration:
                return
            except httpx.TransportError as error:
                log.info("an event stream from %s ended: %s", answer.url.path, _outcome(error))
                return
            yield chunk
    finally:
        stop.cancel()
        await answer.aclose()


def _retrieve(task: asyncio.Future[bytes]) -> None:
    if not task.cancelled():
        task.exception()


def _outcome(error: httpx.TransportError) -> str:
    """What went wrong, as the metrics and the breaker's log name it."""
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return "connect_error"  # the request never reached the upstream
    if isinstance(error, httpx.TimeoutException):
        return "timeout"
    # Often a kept-alive connection the upstream had closed (it restarted, say).
    return "protocol_error"


class Proxy:
    """Sends requests to the upstreams through their breakers, retrying what is safe to."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        upstreams: Mapping[str, Upstream],
        *,
        retries: int = 2,
        backoff_seconds: float = 0.1,
    ) -> None:
        self._client = client
        self.upstreams = dict(upstreams)
        self._retries = retries
        self._backoff_seconds = backoff_seconds
        for name in self.upstreams:
            CIRCUIT_OPEN.labels(name).set(0)

    async def forward(self, upstream: str, request: OutgoingRequest) -> httpx.Response:
        """The upstream's answer, read in full, except an event stream (`is_event_stream`):
        that is returned unread, for the caller to relay (`relay`) and close. Raises an
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
            try:
                response = await self._send(target, request, timeout)
            except httpx.LocalProtocolError as error:
                # The request could not be written as HTTP/1.1: the client's doing (a header
                # value h11 refuses), never the upstream's, so the breaker does not count it.
                UPSTREAM_REQUESTS.labels(upstream, "invalid_request").inc()
                raise InvalidRequestError(
                    upstream, f"cannot be sent this request: {error}"
                ) from None
            except httpx.PoolTimeout:
                # The gateway's own connection pool is exhausted: nothing is wrong upstream.
                UPSTREAM_REQUESTS.labels(upstream, "pool_timeout").inc()
                raise UpstreamUnavailableError(upstream, "is busy (no free connection)") from None
            except httpx.TransportError as error:
                outcome = _outcome(error)
                self._failed(target, outcome)
                # A timed-out request may have been applied, and may be slow again: not retried.
                if can_retry and outcome != "timeout":
                    await self._back_off(attempt)
                    continue
                raise self._failure(target, outcome, error) from None
            if response.status_code in RETRIED_STATUSES:
                self._failed(target, f"status_{response.status_code}")
                if can_retry:
                    await self._back_off(attempt)
                    continue
                return self._without_upstream_addresses(response)
            self._succeeded(target)
            return self._without_upstream_addresses(response)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _send(
        self, target: Upstream, request: OutgoingRequest, timeout: httpx.Timeout
    ) -> httpx.Response:
        """One attempt: the answer, read in full unless it is an event stream."""
        outgoing = self._client.build_request(
            request.method,
            target.url(request.raw_path, request.query),
            headers=[
                (name.encode("latin-1"), value.encode("latin-1")) for name, value in request.headers
            ],
            content=request.body,
            timeout=timeout,
        )
        response = await self._client.send(outgoing, stream=True)
        if is_event_stream(response):
            return response
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    def _timeout_of(self, request: OutgoingRequest) -> httpx.Timeout:
        """The client's timeouts; for a request that accepts an event stream, a read timeout
        of STREAM_IDLE_SECONDS (each chunk of a stream is a read)."""
        accepts = ",".join(value for name, value in request.headers if name.lower() == "accept")
        if EVENT_STREAM not in accepts.lower():
            return self._client.timeout
        timeout = self._client.timeout
        return httpx.Timeout(
            connect=timeout.connect,
            read=max(timeout.read or 0.0, STREAM_IDLE_SECONDS),
            write=timeout.write,
            pool=timeout.pool,
        )

    def _without_upstream_addresses(self, response: httpx.Response) -> httpx.Response:
        """The answer, its location headers rewritten by `public_location` (raw bytes read
        and written as Latin-1, as `response_headers` passes them on)."""
        headers: list[tuple[bytes, bytes]] = []
        for name, value in response.headers.raw:
            if name.decode("latin-1").lower() not in LOCATION_HEADERS:
                headers.append((name, value))
                continue
            public = public_location(value.decode("latin-1"), self.upstreams.values())
            if public is None:
                log.warning("dropped a %s header naming an upstream: %r", name.decode(), value)
            else:
                headers.append((name, public.encode("latin-1")))
        response.headers = httpx.Headers(headers)
        return response

    async def check_health(self, upstream: str) -> None:
        """Returns when the upstream's `/healthz` answers 200 (the breaker is not involved);
        raises an `httpx.HTTPError` or `UpstreamUnavailableError` otherwise."""
        target = self.upstreams[upstream]
        response = await self._client.get(
            target.url(b"/healthz", b""), timeout=HEALTH_TIMEOUT_SECONDS
        )
        if response.status_code != httpx.codes.OK:
            raise UpstreamUnavailableError(upstream, f"answered {response.status_code} on /healthz")

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
