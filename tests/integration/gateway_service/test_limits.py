"""Rate limits as clients meet them: 429 with Retry-After past the burst, per user and per
address, recovery after the wait, and limits shared by gateway replicas through Redis."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
import redis.asyncio as redis
from redis.exceptions import RedisError

from choreo.auth import SigningKey

from .conftest import StartGateway, Upstreams

REDIS_URL = "redis://127.0.0.1:6379"


def metric(exposition: str, name: str) -> float:
    """A sample's value in a Prometheus text exposition (the sample must be there)."""
    for line in exposition.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == name:
            return float(value)
    raise AssertionError(f"no {name} in /metrics")


def refused(response: httpx.Response, *, limit: int) -> int:
    """Checks a 429 answer; returns its Retry-After."""
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    assert response.headers["x-ratelimit-limit"] == str(limit)
    assert response.headers["x-ratelimit-remaining"] == "0"
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1
    return retry_after


async def test_a_burst_past_the_limit_is_refused_until_tokens_come_back(
    upstreams: Upstreams, start_gateway: StartGateway, signing_key: SigningKey
) -> None:
    # Behind a trusted proxy, so the test can speak from several addresses.
    gateway = await start_gateway(
        upstreams,
        GATEWAY_TRUST_FORWARDED="true",
        GATEWAY_RATE_LIMIT_PER_SECOND="0.5",
        GATEWAY_RATE_LIMIT_BURST="5",
        GATEWAY_ADDRESS_RATE_LIMIT_PER_SECOND="0.5",
        GATEWAY_ADDRESS_RATE_LIMIT_BURST="8",
    )
    token = signing_key.issue(str(uuid.uuid4()))
    orders = upstreams["order"]

    async with gateway.client(token) as user:
        from_home = {"X-Forwarded-For": "10.0.0.1"}
        answers = [await user.get("/api/v1/orders", headers=from_home) for _ in range(7)]
        assert [a.status_code for a in answers] == [200] * 5 + [429] * 2
        assert [a.headers["x-ratelimit-remaining"] for a in answers[:5]] == list("43210")
        assert all(a.headers["x-ratelimit-limit"] == "5" for a in answers[:5])
        retry_after = refused(answers[-1], limit=5)
        assert retry_after <= 2  # one token every 2 s
        assert orders.hits("/api/v1/orders") == 5  # refused requests never reach the service

        # The limit follows the user to another address.
        refused(await user.get("/api/v1/orders", headers={"X-Forwarded-For": "10.0.0.4"}), limit=5)

    async with gateway.client() as anonymous:
        crowded = {"X-Forwarded-For": "10.0.0.2"}
        answers = [await anonymous.get("/api/v1/products", headers=crowded) for _ in range(9)]
        assert [a.status_code for a in answers] == [200] * 8 + [429]
        refused(answers[-1], limit=8)
        assert (await anonymous.get("/openapi.json", headers=crowded)).status_code == 429
        # Another address has a bucket of its own; probes are never limited, metrics are.
        other = await anonymous.get("/api/v1/products", headers={"X-Forwarded-For": "10.0.0.3"})
        assert other.status_code == 200
        for probe in ("/healthz", "/readyz"):
            assert (await anonymous.get(probe, headers=crowded)).status_code == 200
        assert (await anonymous.get("/metrics", headers=crowded)).status_code == 429
        metrics = (await anonymous.get("/metrics")).text
        assert metric(metrics, "gateway_rate_limited_total") == 6  # every 429 above

    await asyncio.sleep(retry_after)
    async with gateway.client(token) as user:
        again = await user.get("/api/v1/orders", headers={"X-Forwarded-For": "10.0.0.1"})
    assert again.status_code == 200
    assert orders.hits("/api/v1/orders") == 6


@pytest.fixture
async def shared_redis() -> redis.Redis:
    """The machine's Redis; this test needs it, and fails (never skips) without it."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as error:
        await client.aclose()
        pytest.fail(
            f"the Redis rate-limit test needs a Redis server at {REDIS_URL} ({error!r}); "
            "start one there (the CI machine has it) and run the test again"
        )
    return client


async def test_replicas_share_one_limit_through_redis(
    upstreams: Upstreams,
    start_gateway: StartGateway,
    signing_key: SigningKey,
    shared_redis: redis.Redis,
) -> None:
    prefix = f"test:gateway:{uuid.uuid4().hex}:"
    settings = {
        "REDIS_URL": REDIS_URL,
        "GATEWAY_RATE_LIMIT_PREFIX": prefix,
        "GATEWAY_ADDRESS_RATE_LIMIT_PER_SECOND": "0.5",
        "GATEWAY_ADDRESS_RATE_LIMIT_BURST": "6",
    }
    try:
        first, second = await asyncio.gather(
            start_gateway(upstreams, **settings), start_gateway(upstreams, **settings)
        )
        user_id = str(uuid.uuid4())
        token = signing_key.issue(user_id)
        answers = []
        async with first.client(token) as one, second.client(token) as other:
            for _ in range(4):
                for api in (one, other):
                    # Not behind a trusted proxy: a made-up X-Forwarded-For changes nothing.
                    spoofed = {"X-Forwarded-For": f"10.9.9.{len(answers)}"}
                    answers.append(await api.get("/api/v1/payments", headers=spoofed))
            assert [a.status_code for a in answers] == [200] * 6 + [429] * 2
            retry_after = refused(answers[-1], limit=6)
            assert upstreams["payment"].hits("/api/v1/payments") == 6

            keys = {key.decode() for key in await shared_redis.keys(f"{prefix}*")}
            assert keys == {f"{prefix}address:127.0.0.1", f"{prefix}user:{user_id}"}

            await asyncio.sleep(retry_after)
            assert (await other.get("/api/v1/payments")).status_code == 200
    finally:
        keys = await shared_redis.keys(f"{prefix}*")
        if keys:
            await shared_redis.delete(*keys)
        await shared_redis.aclose()
