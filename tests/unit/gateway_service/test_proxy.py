"""Forwarding, over an in-memory HTTP transport: headers, retries, breaker, error kinds."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from gateway_service.domain import BreakerState, CircuitBreaker
from gateway_service.proxy import (
    OutgoingRequest,
    Proxy,
    Upstream,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    public_location,
    request_headers,
    response_headers,
)

Answer = Callable[[httpx.Request], httpx.Response]


def proxy(
    answers: list[Answer], *, threshold: int = 10
) -> tuple[Proxy, list[httpx.Request], CircuitBreaker]:
    """A proxy to one upstream (`order`) whose n-th request gets `answers[n]`."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[len(seen) - 1](request)

    breaker = CircuitBreaker(failure_threshold=threshold, cooldown_seconds=30.0)
    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    upstream = Upstream("order", "http://order:8002", breaker)
    return Proxy(client, {"order": upstream}, backoff_seconds=0.001), seen, breaker


def request(method: str = "GET", *, body: bytes = b"") -> OutgoingRequest:
    return OutgoingRequest(
        method=method,
        raw_path=b"/api/v1/orders/a%2Fb",
        query=b"limit=5&cursor=x%20y",
        headers=[("Authorization", "Bearer t"), ("Idempotency-Key", "k1")],
        body=body,
    )


def status(code: int) -> Answer:
    return lambda request: httpx.Response(code, json={"status": code})


def fail(error: type[httpx.TransportError]) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        raise error("simulated", request=request)

    return answer


async def test_the_request_arrives_as_the_client_sent_it() -> None:
    forwarding, seen, _ = proxy([status(200)])
    response = await forwarding.forward("order", request("POST", body=b'{"a": 1}'))
    assert response.status_code == 200
    (sent,) = seen
    assert sent.method == "POST"
    assert sent.url.raw_path == b"/api/v1/orders/a%2Fb?limit=5&cursor=x%20y"
    assert sent.url.host == "order"
    assert sent.headers["authorization"] == "Bearer t"
    assert sent.headers["idempotency-key"] == "k1"
    assert sent.content == b'{"a": 1}'


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"])
async def test_idempotent_requests_are_retried_twice(method: str) -> None:
    forwarding, seen, breaker = proxy([status(503), fail(httpx.ConnectError), status(200)])
    response = await forwarding.forward("order", request(method))
    assert response.status_code == 200
    assert len(seen) == 3
    assert breaker.consecutive_failures == 0


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_other_requests_are_sent_once(method: str) -> None:
    forwarding, seen, _ = proxy([status(503), status(200)])
    response = await forwarding.forward("order", request(method))
    assert response.status_code == 503  # the upstream's own answer, passed on
    assert len(seen) == 1

    forwarding, seen, _ = proxy([fail(httpx.ConnectError), status(200)])
    with pytest.raises(UpstreamUnavailableError):
        await forwarding.forward("order", request(method))
    assert len(seen) == 1


async def test_the_last_failing_answer_is_passed_on_after_the_retries() -> None:
    forwarding, seen, _ = proxy([status(502), status(504), status(503)])
    assert (await forwarding.forward("order", request())).status_code == 503
    assert len(seen) == 3


async def test_other_errors_from_the_upstream_are_answers_not_failures() -> None:
    forwarding, seen, breaker = proxy([status(500), status(404), status(409)], threshold=1)
    for expected in (500, 404, 409):
        assert (await forwarding.forward("order", request())).status_code == expected
    assert len(seen) == 3
    assert breaker.state is BreakerState.CLOSED


async def test_a_timeout_is_not_retried_and_says_so() -> None:
    forwarding, seen, breaker = proxy([fail(httpx.ReadTimeout), status(200)])
    with pytest.raises(UpstreamTimeoutError):
        await forwarding.forward("order", request())
    assert len(seen) == 1
    assert breaker.consecutive_failures == 1


async def test_a_broken_connection_is_a_protocol_error_when_it_cannot_be_retried() -> None:
    forwarding, _, _ = proxy([fail(httpx.RemoteProtocolError)])
    with pytest.raises(UpstreamProtocolError):
        await forwarding.forward("order", request("POST"))


async def test_an_open_circuit_refuses_without_sending() -> None:
    forwarding, seen, breaker = proxy([fail(httpx.ConnectError)] * 3, threshold=3)
    with pytest.raises(UpstreamUnavailableError) as refused:
        await forwarding.forward("order", request())
    assert len(seen) == 3
    assert breaker.state is BreakerState.OPEN
    assert refused.value.retry_after == pytest.approx(30.0, abs=1.0)

    with pytest.raises(UpstreamUnavailableError) as refused:
        await forwarding.forward("order", request())
    assert len(seen) == 3  # not even tried
    assert refused.value.retry_after is not None
    assert 0 < refused.value.retry_after <= 30.0


def test_hop_by_hop_headers_stay_behind_and_the_gateway_adds_its_own() -> None:
    incoming = [
        ("Host", "api.example.com"),
        ("Authorization", "Bearer t"),
        ("Content-Type", "application/json"),
        ("Connection", "keep-alive, X-Secret-Hop"),
        ("X-Secret-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("X-Request-ID", "client-chosen"),
        ("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("X-Real-IP", "7.7.7.7"),  # a client's claim: never passed on
    ]
    headers = dict(
        request_headers(
            incoming,
            peer="10.1.2.3",
            scheme="http",
            trust_forwarded=False,
            request_id="gateway-id",
            traceparent="00-" + "a" * 32 + "-" + "c" * 16 + "-01",
        )
    )
    assert headers == {
        "Authorization": "Bearer t",
        "Content-Type": "application/json",
        "X-Forwarded-For": "10.1.2.3",
        "X-Forwarded-Proto": "http",
        "X-Real-IP": "10.1.2.3",
        "X-Request-ID": "gateway-id",
        "traceparent": "00-" + "a" * 32 + "-" + "c" * 16 + "-01",
    }

    trusted = dict(
        request_headers(
            incoming,
            peer="10.1.2.3",
            scheme="http",
            trust_forwarded=True,
            request_id=None,
            traceparent=None,
        )
    )
    assert trusted["X-Forwarded-For"] == "6.6.6.6, 10.1.2.3"
    assert trusted["X-Forwarded-Proto"] == "https"
    # Behind a trusted proxy, the client is the address that proxy added (the last entry).
    assert trusted["X-Real-IP"] == "6.6.6.6"


def test_the_answer_keeps_its_end_to_end_headers() -> None:
    upstream = httpx.Headers(
        [
            ("Content-Type", "application/json"),
            ("Location", "/api/v1/orders/1"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Content-Length", "12"),
            ("Content-Encoding", "gzip"),
            ("Connection", "close"),
            ("Server", "uvicorn"),
            ("X-Request-ID", "upstream-id"),
            ("Retry-After", "5"),
            ("X-Note", "caf\xe9".encode("latin-1")),
        ]
    )
    assert [(name.lower(), value) for name, value in response_headers(upstream.raw)] == [
        ("content-type", "application/json"),
        ("location", "/api/v1/orders/1"),
        ("set-cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("retry-after", "5"),
        ("x-note", "caf\xe9"),  # Latin-1, as Starlette encodes it again
    ]


# No upstream address reaches a client

UPSTREAMS = [
    Upstream("inventory", "http://127.0.0.1:8004", CircuitBreaker()),
    Upstream("order", "http://order.internal:8002/", CircuitBreaker()),
    Upstream("payment", "https://payments.internal/behind/a/prefix", CircuitBreaker()),
]


@pytest.mark.parametrize(
    ("location", "public"),
    [
        # FastAPI's redirect_slashes, as the security review met it.
        ("http://127.0.0.1:8004/api/v1/products", "/api/v1/products"),
        (
            "http://127.0.0.1:8004/api/v1/products?limit=5&q=a%20b#top",
            "/api/v1/products?limit=5&q=a%20b#top",
        ),
        ("HTTP://127.0.0.1:8004/", "/"),
        ("http://127.0.0.1:8004", "/"),
        ("//127.0.0.1:8004/api/v1/products", "/api/v1/products"),
        ("  http://127.0.0.1:8004/api/v1/products ", "/api/v1/products"),
        ("http://user:secret@127.0.0.1:8004/api/v1/x", "/api/v1/x"),
        ("http://ORDER.internal:8002/api/v1/orders/1", "/api/v1/orders/1"),
        ("http://order.internal:8002/api/v1/orders/1", "/api/v1/orders/1"),
        ("https://payments.internal:443/behind/a/prefix/api/v1/payments", "/api/v1/payments"),
        ("https://payments.internal/behind/a/prefix", "/"),
        # On an upstream's origin but not under its base URL: no public spelling.
        ("https://payments.internal/elsewhere", None),
        ("https://payments.internal/behind/a/prefixed", None),
        ("http://127.0.0.1:notaport/", None),
        # Not an upstream: paths, other ports and hosts, third parties.
        ("/api/v1/orders/1", "/api/v1/orders/1"),
        ("orders/1", "orders/1"),
        ("http://127.0.0.1:8005/api/v1/products", "http://127.0.0.1:8005/api/v1/products"),
        ("http://127.0.0.1/api/v1/products", "http://127.0.0.1/api/v1/products"),
        ("https://checkout.stripe.com/c/pay/cs_1", "https://checkout.stripe.com/c/pay/cs_1"),
    ],
)
def test_a_location_on_an_upstreams_origin_becomes_the_gateways_path(
    location: str, public: str | None
) -> None:
    assert public_location(location, UPSTREAMS) == public


async def test_no_answer_carries_an_upstreams_address() -> None:
    def redirect(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            307,
            headers=[
                (b"Location", b"http://order:8002/api/v1/orders?limit=5"),
                (b"Content-Location", b"http://order:8002/api/v1/orders/o-1"),
                (b"X-Note", "caf\xe9".encode("latin-1")),
            ],
        )

    def failing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Content-Location": "http://order:8002/healthz"})

    forwarding, _, _ = proxy([redirect])
    answer = await forwarding.forward("order", request())
    assert answer.headers.raw == [
        (b"Location", b"/api/v1/orders?limit=5"),
        (b"Content-Location", b"/api/v1/orders/o-1"),
        (b"X-Note", "caf\xe9".encode("latin-1")),
    ]

    forwarding, _, _ = proxy([failing], threshold=1)
    answer = await forwarding.forward("order", request("POST"))
    assert answer.status_code == 503
    assert answer.headers["content-location"] == "/healthz"
