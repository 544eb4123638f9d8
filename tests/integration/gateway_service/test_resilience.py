"""When what the gateway depends on fails: retries where they are safe, 504 on a slow service,
503 and an open circuit on a dead one (and recovery when it is back), rate limits that let
requests through while Redis is down, and tokens still verified while the user service is."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import httpx
import pytest

from choreo.auth import SigningKey
from choreo.testing import free_port

from .conftest import StartGateway, Upstreams
from .test_limits import metric

COOLDOWN_SECONDS = 2


def unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "upstream_unavailable"


def circuit_open(exposition: str, upstream: str) -> float:
    return metric(exposition, f'gateway_upstream_circuit_open{{upstream="{upstream}"}}')


async def test_failures_upstream_are_retried_reported_and_isolated(
    upstreams: Upstreams,
    start_gateway: StartGateway,
    signing_key: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="choreo.stack")
    gateway = await start_gateway(
        upstreams,
        GATEWAY_BREAKER_FAILURE_THRESHOLD="3",
        GATEWAY_BREAKER_COOLDOWN_SECONDS=str(COOLDOWN_SECONDS),
        GATEWAY_UPSTREAM_TIMEOUT_SECONDS="1",
        # Nothing listens there: the limits cannot be checked, so they are not enforced.
        REDIS_URL=f"redis://127.0.0.1:{free_port()}",
        GATEWAY_RATE_LIMIT_BURST="1",
        GATEWAY_ADDRESS_RATE_LIMIT_BURST="1",
    )
    payment, notification, order = (upstreams[s] for s in ("payment", "notification", "order"))
    token = signing_key.issue(str(uuid.uuid4()))
    async with gateway.client(token) as api:
        # Redis down: every request passes (never a 500), with a warning and a count.
        answers = [await api.get("/api/v1/notifications") for _ in range(5)]
        assert [a.status_code for a in answers] == [200] * 5
        assert "x-ratelimit-limit" not in answers[-1].headers
        assert "strict-transport-security" not in answers[-1].headers  # GATEWAY_HSTS is off
        metrics = (await api.get("/metrics")).text
        assert metric(metrics, "gateway_rate_limit_fail_open_total") >= 5

        # Idempotent requests are retried (twice at most); the others are sent once.
        payment.fail_next(503, times=2)
        assert (await api.get("/api/v1/payments")).status_code == 200
        assert payment.hits("/api/v1/payments") == 3
        payment.fail_next(504)
        assert (await api.delete("/api/v1/payment-methods/pm-1")).status_code == 200
        assert payment.hits("/api/v1/payment-methods/pm-1", "DELETE") == 2
        payment.fail_next(502)
        failed = await api.post("/api/v1/payment-methods", json={"token": "tok_visa"})
        assert failed.status_code == 502  # the service's own answer, passed on
        assert failed.json()["error"]["code"] == "stand_in_failure"
        assert payment.hits("/api/v1/payment-methods", "POST") == 1
        payment.fail_next(503)
        assert (await api.patch("/api/v1/payment-methods/pm-2", json={})).status_code == 503
        assert payment.hits("/api/v1/payment-methods/pm-2", "PATCH") == 1

        # A service slower than the timeout: 504, and the request is not repeated.
        notification.slow_seconds = 3.0
        slow = await api.get("/api/v1/notifications/slow")
        assert slow.status_code == 504
        assert slow.json()["error"]["code"] == "upstream_timeout"
        assert notification.hits("/api/v1/notifications/slow") == 1

        # A dead service: 503; after three failures its circuit opens.
        await order.stop()
        unavailable(await api.post("/api/v1/orders", json={"items": []}))
        opened = await api.get("/api/v1/orders")  # two attempts fail, the third is refused
        unavailable(opened)
        assert 1 <= int(opened.headers["retry-after"]) <= COOLDOWN_SECONDS
        assert circuit_open((await api.get("/metrics")).text, "order") == 1

        # Back, but the circuit is open: refused at once, without trying.
        await order.start()
        tried = len(order.seen)
        refused = await api.get("/api/v1/orders")
        unavailable(refused)
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= COOLDOWN_SECONDS
        assert len(order.seen) == tried
        # Other services are not affected.
        assert (await api.get("/api/v1/payments")).status_code == 200

        # After the cool-down, one probe goes through; it succeeds, so the circuit closes.
        await asyncio.sleep(retry_after)
        assert (await api.get("/api/v1/orders")).status_code == 200
        assert (await api.post("/api/v1/orders", json={"items": []})).status_code == 200
        assert len(order.seen) == tried + 2
        assert circuit_open((await api.get("/metrics")).text, "order") == 0

    # The gateway's log lines (JSON), as the test collected them from its output.
    lines = [r.getMessage() for r in caplog.records if r.name == "choreo.stack.gateway"]
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    warnings = [entry["message"] for entry in entries if entry["level"] == "WARNING"]
    assert any("rate limits not enforced: Redis is unreachable" in w for w in warnings)
    assert any("circuit to the order service opened" in w for w in warnings)


async def test_with_the_user_service_down_the_gateway_serves_and_verifies_tokens(
    upstreams: Upstreams, start_gateway: StartGateway, signing_key: SigningKey
) -> None:
    user = upstreams["user"]
    customer = signing_key.issue(str(uuid.uuid4()))
    # As in production, the gateway fetches the keys from the user service's JWKS.
    gateway = await start_gateway(upstreams, JWT_JWKS="")
    async with gateway.client(customer) as api:
        assert (await api.get("/api/v1/orders")).status_code == 200

        await user.stop()
        # The keys fetched before are kept: tokens are still verified, requests still proxied.
        newcomer = {"Authorization": f"Bearer {signing_key.issue(str(uuid.uuid4()))}"}
        assert (await api.get("/api/v1/orders")).status_code == 200
        assert (await api.post("/api/v1/orders", json={"items": []})).status_code == 200
        assert (await api.get("/api/v1/payments", headers=newcomer)).status_code == 200
        # The user service's own routes answer 503, with when to try again.
        login = await api.post("/api/v1/auth/login", json={"email": "a@example.com"})
        unavailable(login)
        assert int(login.headers["retry-after"]) >= 1
        ready = await api.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["upstreams"]["user"]["health"].startswith("error")
        assert ready.json()["signing_keys"] == "ok"

    # The gateway dies too and starts again while the user service is still down: it is ready
    # (starting waits for /readyz), serves public routes, and pauses those that need a token.
    gateway.kill()
    gateway = await start_gateway(upstreams, JWT_JWKS="")
    async with gateway.client(customer) as api:
        assert (await api.get("/api/v1/products")).status_code == 200
        paused = await api.get("/api/v1/orders")
        assert paused.status_code == 503, paused.text
        assert paused.json()["error"]["code"] == "auth_unavailable"
        assert paused.headers["retry-after"] == "1"
        ready = await api.get("/readyz")
        assert ready.status_code == 200
        # No keys: the last try failed, or the next one (at most a second away) is awaited.
        assert ready.json()["signing_keys"] in ("error: still being fetched",) or ready.json()[
            "signing_keys"
        ].startswith("error: signing keys unavailable")

        # Back: the gateway fetches the keys by itself, within the Retry-After it gave.
        await user.start()
        back_at = time.monotonic()
        while (answer := await api.get("/api/v1/orders")).status_code == 503:
            assert time.monotonic() - back_at < 5, answer.text
            await asyncio.sleep(int(answer.headers["retry-after"]))
        assert answer.status_code == 200, answer.text
        assert (await api.get("/readyz")).json()["signing_keys"] == "ok"


async def test_a_clients_header_never_counts_against_the_upstream(
    upstreams: Upstreams, start_gateway: StartGateway
) -> None:
    """A header value with whitespace around it (which HTTP/1.1 clients like curl send as
    given, and h11 refuses to send on) reaches the upstream trimmed (RFC 9110 §5.5), and can
    never open the upstream's circuit for everyone else."""
    gateway = await start_gateway(upstreams, GATEWAY_BREAKER_FAILURE_THRESHOLD="2")
    port = int(gateway.url.rsplit(":", 1)[1])

    async def raw_get(header: str) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /api/v1/products HTTP/1.1\r\nHost: gateway\r\n{header}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        status_line = await reader.readline()
        writer.close()
        return int(status_line.split()[1])

    assert [await raw_get("X-Anything: a ") for _ in range(6)] == [200] * 6
    assert upstreams["inventory"].seen[-1].headers["x-anything"] == "a"
    async with gateway.client() as api:
        assert (await api.get("/api/v1/products")).status_code == 200
        assert circuit_open((await api.get("/metrics")).text, "inventory") == 0
