"""Sign-ins through the gateway, in front of the real user service (issue 13): token answers no
cache keeps, and a login flood from one address refused with 429 while a login from elsewhere
succeeds; the address is the one the gateway saw, so a client cannot pick it by sending
`X-Forwarded-For` unless the gateway is told to trust the proxy in front of it."""

from __future__ import annotations

import asyncio

import httpx

from choreo.testing import StartService

ADA_PASSWORD = "Analytical-Engine-1843"
WRONG_PASSWORD = "Analytical-Engine-1842"
FLOOD_ATTEMPTS = 20  # per connection, 12 connections


async def attempt_login(
    api: httpx.AsyncClient, email: str, password: str, address: str | None = None
) -> httpx.Response:
    return await api.post(
        "/api/v1/auth/login",
        json={"email": email, "password": password},
        headers={"X-Forwarded-For": address} if address else {},
    )


def rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    assert int(response.headers["retry-after"]) >= 1


async def test_sign_ins_through_the_gateway(start_service: StartService) -> None:
    users = start_service("user")
    async with users.client() as api:
        response = await api.post(
            "/api/v1/auth/register",
            json={"email": "ada@example.com", "password": ADA_PASSWORD, "full_name": "Ada"},
        )
        assert response.status_code == 201, response.text

    # A gateway that trusts no proxy: the X-Forwarded-For a client sends is not believed.
    gateway = start_service("gateway", REDIS_URL="")
    async with gateway.client() as api:
        response = await attempt_login(api, "ada@example.com", ADA_PASSWORD)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"
        refreshed = await api.post(
            "/api/v1/auth/refresh", json={"refresh_token": response.json()["refresh_token"]}
        )
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.headers["cache-control"] == "no-store"
        assert refreshed.headers["pragma"] == "no-cache"

        for n in range(10):
            email = f"nobody{n}@example.com"
            response = await attempt_login(api, email, WRONG_PASSWORD, f"10.0.0.{n}")
            assert response.status_code == 401
        response = await attempt_login(api, "nobody@example.com", WRONG_PASSWORD, "10.0.1.1")
        rate_limited(response)
        # The gateway's own limits (20/s an address) were not what refused it.
        assert int(response.headers["x-ratelimit-remaining"]) > 0
    gateway.stop()

    # Behind a proxy it trusts, the gateway counts each client by the address that proxy saw.
    gateway = start_service("gateway", REDIS_URL="", GATEWAY_TRUST_FORWARDED="true")
    async with gateway.client() as api:
        statuses: list[int] = []

        async def flood(connection: int) -> None:
            async with gateway.client() as attacker:
                for n in range(FLOOD_ATTEMPTS):
                    email = f"victim-{connection}-{n}@example.com"
                    response = await attempt_login(attacker, email, "x" * 8, "203.0.113.7")
                    statuses.append(response.status_code)
                    if response.status_code == 429:
                        rate_limited(response)

        flooding = asyncio.gather(*(flood(n) for n in range(12)))
        while 429 not in statuses and not flooding.done():
            await asyncio.sleep(0.05)
        response = await attempt_login(api, "ada@example.com", ADA_PASSWORD, "198.51.100.2")
        assert response.status_code == 200, response.text
        assert response.json()["token_type"] == "bearer"
        await flooding
        assert statuses.count(401) <= 12
        assert statuses.count(429) == len(statuses) - statuses.count(401)
