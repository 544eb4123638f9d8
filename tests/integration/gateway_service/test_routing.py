"""The gateway as a client meets it: requests reach the right service with the caller's headers,
answers come back with security headers, CORS, readiness, and the merged OpenAPI document."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid

import httpx

from choreo.auth import SigningKey

from .conftest import ORIGIN, Front

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def security_headers_of(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["strict-transport-security"].startswith("max-age=")


async def test_requests_reach_their_service_as_the_client_sent_them(
    front: Front, signing_key: SigningKey
) -> None:
    gateway, upstreams = front.gateway, front.upstreams
    token = signing_key.issue(str(uuid.uuid4()))
    routes = {
        "/api/v1/users/me": "user",
        "/api/v1/products/p-1": "inventory",
        "/api/v1/payment-methods": "payment",
        "/api/v1/payments": "payment",
        "/api/v1/admin/payments": "payment",
        "/api/v1/orders/o-1/timeline": "order",
        "/api/v1/admin/orders": "order",
        "/api/v1/notifications": "notification",
    }
    async with gateway.client(token) as api:
        for path, service in routes.items():
            response = await api.get(path, params={"limit": "5", "q": "a b"})
            assert response.status_code == 200, (path, response.text)
            assert response.json() == {"service": service, "method": "GET", "path": path}
            assert upstreams[service].seen[-1].query == "limit=5&q=a+b"
            security_headers_of(response)

        placed = await api.post(
            "/api/v1/orders",
            json={"items": [{"product_id": "p-1", "quantity": 2}]},
            headers={
                "Idempotency-Key": "order-key-1",
                "X-Request-ID": "req-123",
                "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01",
                "X-Forwarded-For": "6.6.6.6",  # not trusted: this gateway is the edge
                "Connection": "X-Hop-Secret",
                "X-Hop-Secret": "for the next hop only",
                "X-Note": "caf\xe9".encode("latin-1"),  # not ASCII: passed on byte for byte
            },
        )
    assert placed.status_code == 200
    assert placed.headers["location"] == "/api/v1/order/echo"  # upstream headers come back
    assert placed.headers["x-request-id"] == "req-123"
    received = upstreams["order"].seen[-1]
    assert (received.method, received.path) == ("POST", "/api/v1/orders")
    assert received.body == b'{"items":[{"product_id":"p-1","quantity":2}]}'
    assert received.headers["content-type"] == "application/json"
    assert received.headers["authorization"] == f"Bearer {token}"
    assert received.headers["idempotency-key"] == "order-key-1"
    assert received.headers["x-request-id"] == "req-123"
    # The same trace, continued by the gateway's own span.
    version, trace_id, parent_id, flags = received.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert parent_id != CLIENT_SPAN
    assert received.headers["x-forwarded-for"] == "127.0.0.1"
    assert received.headers["x-forwarded-proto"] == "http"
    assert "x-hop-secret" not in received.headers
    assert received.headers["x-note"] == "caf\xe9"

    # Without an id of the client's, the gateway's own travels and comes back.
    async with gateway.client(token) as api:
        response = await api.get("/api/v1/notifications")
    generated = response.headers["x-request-id"]
    assert upstreams["notification"].seen[-1].headers["x-request-id"] == generated
    assert upstreams["notification"].seen[-1].headers["traceparent"].startswith("00-")

    async with gateway.client(token) as api:
        too_large = await api.post("/api/v1/orders", content=b"x" * (1024 * 1024 + 1))
        assert too_large.status_code == 413
        assert too_large.json()["error"]["code"] == "content_too_large"
        unknown = await api.get("/api/v1/warehouses")
        climbing = await api.get("/api/v1/products/%2e%2e/orders")
        elsewhere = await api.get("/internal/stats")
    for response in (unknown, climbing, elsewhere):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        security_headers_of(response)
    assert all("orders" not in s.raw_path for s in upstreams["inventory"].seen)


async def test_browsers_get_cors_from_allowed_origins_only(
    front: Front, signing_key: SigningKey
) -> None:
    gateway, upstreams = front.gateway, front.upstreams
    orders_seen = len(upstreams["order"].seen)
    async with gateway.client() as browser:
        preflight = await browser.options(
            "/api/v1/orders",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in preflight.headers["access-control-allow-methods"]
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert {"authorization", "content-type", "idempotency-key"} <= {
            h.strip() for h in allowed.split(",")
        }
        security_headers_of(preflight)
        assert len(upstreams["order"].seen) == orders_seen  # answered by the gateway

        refused = await browser.options(
            "/api/v1/orders",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers

        token = signing_key.issue(str(uuid.uuid4()))
        actual = await browser.get(
            "/api/v1/orders", headers={"Origin": ORIGIN, "Authorization": f"Bearer {token}"}
        )
        assert actual.status_code == 200
        assert actual.headers["access-control-allow-origin"] == ORIGIN
        exposed = {
            h.strip().lower() for h in actual.headers["access-control-expose-headers"].split(",")
        }
        assert {"x-request-id", "location", "retry-after"} <= exposed


async def test_readiness_reports_the_services_health_without_depending_on_it(front: Front) -> None:
    gateway, upstreams = front.gateway, front.upstreams
    async with gateway.client() as probe:
        ready = await probe.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "ready"
        assert body["upstreams"] == {
            service: {"health": "ok", "circuit": "closed"} for service in upstreams
        }
        assert body["signing_keys"] == "ok"

        # A service that is down answers 503 on its own routes; the gateway stays in rotation.
        await upstreams["notification"].stop()
        try:
            still_ready = await probe.get("/readyz")
            assert still_ready.status_code == 200
            reported = still_ready.json()["upstreams"]
            assert reported["notification"]["health"].startswith("error: ConnectError")
            assert reported["order"]["health"] == "ok"
        finally:
            await upstreams["notification"].start()
        assert (await probe.get("/readyz")).json()["upstreams"]["notification"]["health"] == "ok"


async def test_the_openapi_document_merges_the_services(front: Front) -> None:
    async with front.gateway.client() as api:
        response = await api.get("/openapi.json")
        docs = await api.get("/docs")
    assert response.status_code == 200
    spec = response.json()
    assert set(spec["paths"]) == {
        "/api/v1/users/me",
        "/api/v1/orders",
        "/api/v1/payments",
        "/api/v1/products",
        "/api/v1/notifications",
    }
    schemas = spec["components"]["schemas"]
    assert schemas["order_Item"]["properties"] == {"quantity": {"type": "integer"}}
    assert schemas["inventory_Item"]["properties"] == {"sku": {"type": "string"}}
    answer = spec["paths"]["/api/v1/products"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/inventory_Item"
    }
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert spec["paths"]["/api/v1/orders"]["get"]["security"] == [{"bearerAuth": []}]
    assert "x-unavailable" not in spec

    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    assert "/openapi.json" in docs.text
    policy = docs.headers["content-security-policy"]
    # The page's inline script (which starts Swagger UI) is allowed by its hash, and only it.
    (inline,) = re.findall(r"<script>(.*?)</script>", docs.text, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}';" in policy
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    assert "connect-src 'self'" in policy
    assert "'unsafe-eval'" not in policy
