"""Which headers travel each way through the gateway, and how a location header naming an
upstream is shown to a client (forwarding itself is tested against a real server, in the
integration tests)."""

from __future__ import annotations

import pytest

from gateway_service.headers import public_location, request_headers, response_headers


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
    upstream = [
        (b"Content-Type", b"application/json"),
        (b"Location", b"/api/v1/orders/1"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"Content-Length", b"12"),
        (b"Content-Encoding", b"gzip"),
        (b"Connection", b"close"),
        (b"Server", b"uvicorn"),
        (b"X-Request-ID", b"upstream-id"),
        (b"Retry-After", b"5"),
        (b"X-Note", "caf\xe9".encode("latin-1")),
    ]
    assert [(name.lower(), value) for name, value in response_headers(upstream)] == [
        ("content-type", "application/json"),
        ("location", "/api/v1/orders/1"),
        ("set-cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("retry-after", "5"),
        ("x-note", "caf\xe9"),  # Latin-1, as Starlette encodes it again
    ]


# No upstream address reaches a client

UPSTREAMS = [
    "http://127.0.0.1:8004",
    "http://order.internal:8002/",
    "https://payments.internal/behind/a/prefix",
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
