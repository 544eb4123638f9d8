"""Issue 13's findings against the user service as a process: the password policy and the name
rules over HTTP, token answers no cache keeps, and credential attempts limited per address and
per account (called directly: a call that bypasses the gateway is limited too), with hashing in
bounded turns so that a flood is refused rather than queued.

The test's requests all come from 127.0.0.1, a proxy the service trusts (uvicorn's default), so
an `X-Forwarded-For` header picks the client address each request is counted against.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from choreo.testing import StartService

from .conftest import login, register

ADA_PASSWORD = "Analytical-Engine-1843"
WRONG_PASSWORD = "Analytical-Engine-1842"
FLOOD_ATTEMPTS = 20  # per connection, 12 connections


def from_address(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error envelope of `response`, checked."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"code", "message", "details"}
    return error


def rate_limited(response: httpx.Response) -> int:
    """Checks a 429 answer; its Retry-After."""
    error = refused(response, 429, "rate_limited")
    assert "try again in" in error["message"]
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1
    return retry_after


async def attempt_login(
    api: httpx.AsyncClient, email: str, password: str, address: str
) -> httpx.Response:
    return await api.post(
        "/api/v1/auth/login",
        json={"email": email, "password": password},
        headers=from_address(address),
    )


async def test_passwords_and_names_are_checked_and_tokens_never_cached(
    start_service: StartService,
) -> None:
    users = start_service("user")
    async with users.client() as api:
        # Accepted before the fix: each is refused, naming the rule, never echoing it.
        for password, rule in [
            ("12345678", "password_common"),
            ("password", "password_common"),
            (" " * 8, "password_blank"),
            ("\u00a0" * 8, "password_blank"),
            ("ada@example.com", "password_personal"),
            ("Ada Lovelace 1815", "password_personal"),
        ]:
            body = {"email": "ada@example.com", "password": password, "full_name": "Ada Lovelace"}
            response = await api.post("/api/v1/auth/register", json=body)
            error = refused(response, 422, "validation_error")
            [detail] = error["details"]
            assert (detail["loc"], detail["type"]) == (["body", "password"], rule), password
            if password.strip() and password != "password":
                assert password not in response.text

        # Names: control, bidi and zero-width characters refused; the rest normalised.
        for name in (
            "Your account is locked, verify at http://evil.example\r\nBcc: x@evil.example",
            "Ada\tLovelace",
            "Ada \u202eecalevoL",
            "Ada\u200bLovelace",
        ):
            body = {"email": "ada@example.com", "password": ADA_PASSWORD, "full_name": name}
            response = await api.post("/api/v1/auth/register", json=body)
            [detail] = refused(response, 422, "validation_error")["details"]
            assert detail["loc"] == ["body", "full_name"]
        ada = await register(api, "ada@example.com", ADA_PASSWORD, " Ada\u00a0\u00a0 Lovelace ")
        assert ada["full_name"] == "Ada Lovelace"

        # Tokens: login and refresh answers are kept by no cache.
        response = await api.post(
            "/api/v1/auth/login", json={"email": "ada@example.com", "password": ADA_PASSWORD}
        )
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"
        tokens = response.json()
        response = await api.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"

        # The profile's name follows the same rules.
        async with users.client(response.json()["access_token"]) as ada_api:
            for name in ("Ada\r\nBcc: x@evil.example", "Ada\u2066Lovelace"):
                response = await ada_api.patch("/api/v1/users/me", json={"full_name": name})
                refused(response, 422, "validation_error")
            response = await ada_api.patch("/api/v1/users/me", json={"full_name": "Ada  King"})
            assert response.json()["full_name"] == "Ada King"


async def test_credential_attempts_are_limited_per_address_and_per_account(
    start_service: StartService,
) -> None:
    users = start_service("user")  # the default limits: 10 per address, 5 per account, a minute
    async with users.client() as api:
        for name in ("ada", "bob", "cyd"):
            await register(api, f"{name}@example.com", ADA_PASSWORD, name.title())

        # An address: ten failures, then 429 for anything it tries, even the right password.
        for n in range(10):
            response = await attempt_login(api, f"nobody{n}@example.com", "x" * 8, "203.0.113.7")
            refused(response, 401, "invalid_credentials")
        rate_limited(await attempt_login(api, "ada@example.com", ADA_PASSWORD, "203.0.113.7"))
        response = await api.post(
            "/api/v1/auth/refresh",
            json={"refresh_token": "not-a-token"},
            headers=from_address("203.0.113.7"),
        )
        rate_limited(response)
        # Another address is not affected.
        response = await attempt_login(api, "ada@example.com", ADA_PASSWORD, "198.51.100.2")
        assert response.is_success

        # An account: five failures from five addresses, then 429 from any address.
        for n in range(5):
            response = await attempt_login(api, "bob@example.com", WRONG_PASSWORD, f"10.0.0.{n}")
            refused(response, 401, "invalid_credentials")
        response = await attempt_login(api, " BOB@example.com", WRONG_PASSWORD, "10.0.1.1")
        assert rate_limited(response) <= 12  # one attempt back every 12 s
        # The address that met the account's limit still signs in to another account.
        assert (await attempt_login(api, "cyd@example.com", ADA_PASSWORD, "10.0.1.1")).is_success

        # Successful logins are given back: a shared address signs many people in.
        for _ in range(15):
            response = await attempt_login(api, "cyd@example.com", ADA_PASSWORD, "192.0.2.1")
            assert response.is_success, response.text

        # Registrations count, successful or not: account creation from one address is bounded.
        codes = []
        for n in range(11):
            response = await api.post(
                "/api/v1/auth/register",
                json={
                    "email": f"new{n}@example.com",
                    "password": ADA_PASSWORD,
                    "full_name": "New",
                },
                headers=from_address("192.0.2.99"),
            )
            codes.append(response.status_code)
        assert codes == [201] * 10 + [429]
        assert response.headers["retry-after"]


async def test_a_login_flood_from_one_address_is_refused_while_others_sign_in(
    start_service: StartService,
) -> None:
    users = start_service("user")
    async with users.client() as api:
        await register(api, "ada@example.com", ADA_PASSWORD, "Ada Lovelace")
        statuses: list[int] = []

        async def flood(connection: int) -> None:
            # One connection of the flood: wrong passwords for ever-new accounts.
            async with users.client() as attacker:
                for n in range(FLOOD_ATTEMPTS):
                    email = f"victim-{connection}-{n}@example.com"
                    response = await attempt_login(attacker, email, "x" * 8, "203.0.113.7")
                    statuses.append(response.status_code)
                    if response.status_code == 429:
                        assert response.headers["retry-after"]

        flooding = asyncio.gather(*(flood(n) for n in range(12)))
        while 429 not in statuses and not flooding.done():
            await asyncio.sleep(0.05)
        # While it goes on, the account's owner, from elsewhere, signs in.
        tokens = await login_from(api, "ada@example.com", ADA_PASSWORD, "198.51.100.2")
        assert tokens["token_type"] == "bearer"
        await flooding
        # The flood had its ten tries (a refill or two at most), and 429 for everything else.
        assert statuses.count(401) <= 12
        assert statuses.count(429) == len(statuses) - statuses.count(401)


async def login_from(
    api: httpx.AsyncClient, email: str, password: str, address: str
) -> dict[str, Any]:
    response = await attempt_login(api, email, password, address)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


async def test_past_the_hashing_queue_sign_ins_are_refused_at_once_and_the_rest_still_answers(
    start_service: StartService,
) -> None:
    users = start_service(
        "user",
        USER_PASSWORD_HASHING_CONCURRENCY="1",
        USER_PASSWORD_HASHING_QUEUE="1",
        USER_CREDENTIAL_ATTEMPTS_PER_ADDRESS="1000",
        USER_CREDENTIAL_ATTEMPTS_PER_ACCOUNT="1000",
    )
    async with users.client() as api:
        await register(api, "ada@example.com", ADA_PASSWORD, "Ada Lovelace")
        # Many addresses at once (a distributed flood): one hashes, one waits, the rest 503.
        logins = [
            asyncio.create_task(
                attempt_login(api, "ada@example.com", WRONG_PASSWORD, f"10.9.0.{n}")
            )
            for n in range(12)
        ]
        # The service keeps answering what needs no hashing meanwhile.
        jwks = await api.get("/api/v1/auth/jwks")
        assert jwks.status_code == 200
        answers = await asyncio.gather(*logins)
        statuses = sorted(a.status_code for a in answers)
        assert 401 in statuses
        assert 503 in statuses
        assert set(statuses) == {401, 503}
        for answer in answers:
            if answer.status_code == 503:
                refused(answer, 503, "service_busy")
                assert answer.headers["retry-after"] == "1"
        # Turned away, those attempts were not counted: the account signs in.
        await login(api, "ada@example.com", ADA_PASSWORD)
