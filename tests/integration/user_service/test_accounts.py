"""The user service as a process on real PostgreSQL and the real broker: registration, login,
refresh-token rotation and reuse detection, the JWKS, profiles, the admins' list and deletion,
the seeded admin, and passwords kept nowhere but as Argon2id hashes."""

from __future__ import annotations

import json
import logging
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import argon2
import httpx
import pytest

from choreo.auth import Principal, StaticKeys, TokenVerifier
from choreo.events import Event
from choreo.records import UserRegistered
from choreo.testing import ServiceProcess, StartService, collect_events, eventually, query

from .conftest import bearer, every_row_as_text, login, register

ADMIN_EMAIL = "root@example.com"
ADMIN_PASSWORD = "a-long-admin-passphrase"
ADA_PASSWORD = "Analytical-Engine-1843"
BOB_PASSWORD = "difference engine no 2"
WRONG_PASSWORD = "Analytical-Engine-1842"
WEAK_PASSWORD = "2short"
JSON = {"Content-Type": "application/json"}
PASSWORDS = (ADMIN_PASSWORD, ADA_PASSWORD, BOB_PASSWORD, WRONG_PASSWORD, WEAK_PASSWORD)


async def verify(jwks: dict[str, Any], token: str) -> Principal:
    """The shared verifier, as every other service runs it, with the published keys."""
    return await TokenVerifier(StaticKeys(jwks)).verify(token)


async def login_time(api: httpx.AsyncClient, email: str, password: str) -> tuple[float, str]:
    started = time.perf_counter()
    response = await api.post("/api/v1/auth/login", json={"email": email, "password": password})
    elapsed = time.perf_counter() - started
    assert response.status_code == 401
    return elapsed, response.text


def of_user(events: list[Event], user_id: str, event_type: str) -> list[Event]:
    return [e for e in events if e.subject == user_id and e.type == event_type]


async def test_accounts_tokens_profiles_and_administration(
    start_service: StartService,
    topics: str,
    kafka_bootstrap: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="choreo.stack")
    users = start_service(
        "user",
        CHOREO_ADMIN_EMAIL=" Root@Example.com ",
        CHOREO_ADMIN_PASSWORD=ADMIN_PASSWORD,
        USER_LOG_LEVEL="DEBUG",
        # This test signs in and fails to, far more often than a minute's limits allow.
        USER_CREDENTIAL_ATTEMPTS_PER_ADDRESS="1000",
        USER_CREDENTIAL_ATTEMPTS_PER_ACCOUNT="1000",
    )
    async with users.client() as api:
        # The keys: public and cacheable.
        response = await api.get("/api/v1/auth/jwks")
        assert response.status_code == 200
        assert "max-age=300" in response.headers["cache-control"]
        jwks = response.json()
        assert [key["alg"] for key in jwks["keys"]] == ["EdDSA"]
        assert all("d" not in key for key in jwks["keys"])  # no private part

        # Registration: the address normalised, the password never echoed.
        ada = await register(api, "  Ada@Example.COM ", ADA_PASSWORD, " Ada Lovelace ")
        assert ada == {
            "id": ada["id"],
            "email": "ada@example.com",
            "full_name": "Ada Lovelace",
            "role": "customer",
            "phone": None,
            "address": None,
            "created_at": ada["created_at"],
        }
        taken = await api.post(
            "/api/v1/auth/register",
            json={"email": "ADA@example.com", "password": BOB_PASSWORD, "full_name": "Imposter"},
        )
        assert (taken.status_code, taken.json()["error"]["code"]) == (409, "email_taken")
        refusals: list[dict[str, Any]] = [
            {"email": "bob@example.com", "password": WEAK_PASSWORD, "full_name": "Bob"},
            {"email": "bob@example.com", "password": "x" * 129, "full_name": "Bob"},
            {"email": "not-an-address", "password": BOB_PASSWORD, "full_name": "Bob"},
            {"email": "bob@example.com", "password": BOB_PASSWORD, "full_name": "  "},
            {"email": "bob@example.com", "password": BOB_PASSWORD, "full_name": "x" * 201},
            {"email": "bob@example.com", "password": BOB_PASSWORD, "full_name": "Bob\u0000"},
            {"email": "bob@example.com", "password": "bad\ud800surrogate", "full_name": "Bob"},
            {"email": "bob@example.com", "password": 12345678, "full_name": "Bob"},
            {"email": "bob@example.com", "password": BOB_PASSWORD},
            {
                "email": "bob@example.com",
                "password": BOB_PASSWORD,
                "full_name": "B",
                "role": "admin",
            },
        ]
        for body in refusals:
            # json.dumps escapes a lone surrogate (httpx's own encoding cannot send it).
            response = await api.post(
                "/api/v1/auth/register", content=json.dumps(body), headers=JSON
            )
            assert (response.status_code, response.json()["error"]["code"]) == (
                422,
                "validation_error",
            ), body
            assert str(body["password"]) not in response.text
        bob = await register(api, "bob@example.com", BOB_PASSWORD, "Bob Babbage")

        # Login: an access token the other services accept, and a refresh token.
        tokens = await login(api, "ADA@example.com ", ADA_PASSWORD)
        assert tokens["token_type"] == "bearer"
        assert tokens["expires_in"] == 900
        principal = await verify(jwks, tokens["access_token"])
        assert principal.session_id is not None  # the session: this login's refresh tokens
        assert principal == Principal(
            ada["id"],
            frozenset({"user"}),
            "ada@example.com",
            principal.session_id,
            principal.expires_at,
        )
        assert principal.expires_at is not None  # the token's exp: 900 s from now
        assert 880 <= (principal.expires_at - datetime.now(UTC)).total_seconds() <= 905
        assert tokens["refresh_token"] not in tokens["access_token"]

        # Wrong password and unknown address: the same answer, in a similar time.
        wrong, unknown, malformed = [], [], []
        for _ in range(5):  # interleaved, so that a busy machine slows all three alike
            wrong.append(await login_time(api, "ada@example.com", WRONG_PASSWORD))
            unknown.append(await login_time(api, "nobody@example.com", ADA_PASSWORD))
            malformed.append(await login_time(api, "nobody", ADA_PASSWORD))
        refusal = wrong[0][1]
        assert {text for _, text in wrong + unknown + malformed} == {refusal}
        assert httpx.Response(401, text=refusal).json()["error"] == {
            "code": "invalid_credentials",
            "message": "the e-mail address or the password is wrong",
            "details": None,
        }
        slowest_refusal = statistics.median(t for t, _ in wrong)
        assert statistics.median(t for t, _ in unknown) > slowest_refusal / 2
        assert statistics.median(t for t, _ in malformed) > slowest_refusal / 2

        # Refresh: rotation; the old token presented again revokes its whole family, and only it.
        other_login = await login(api, "ada@example.com", ADA_PASSWORD)
        rotated = (
            await api.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        ).json()
        assert rotated["refresh_token"] != tokens["refresh_token"]
        assert (await verify(jwks, rotated["access_token"])).user_id == ada["id"]
        twice = await api.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert (twice.status_code, twice.json()["error"]["code"]) == (401, "invalid_refresh_token")
        descendant = await api.post(
            "/api/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]}
        )
        assert descendant.status_code == 401
        for garbage in ("not-a-token", "x" * 512, "\u0000"):
            response = await api.post("/api/v1/auth/refresh", json={"refresh_token": garbage})
            assert response.status_code == 401
        unrelated = await api.post(
            "/api/v1/auth/refresh", json={"refresh_token": other_login["refresh_token"]}
        )
        assert unrelated.status_code == 200
        live_refresh_token = unrelated.json()["refresh_token"]
        revocations = await query(
            users.database_url,
            "SELECT revoked_reason, count(*) FROM refresh_tokens WHERE user_id = %s "
            "GROUP BY revoked_reason",
            ada["id"],
        )
        assert dict(revocations) == {"rotated": 2, "reuse_detected": 1, None: 1}
        # ... and its access tokens, the one handed out by the rotation too.
        rotated_session = (await verify(jwks, rotated["access_token"])).session_id
        assert rotated_session == principal.session_id

        async def reuse_ended_the_session() -> bool:
            me = await api.get("/api/v1/users/me", headers=bearer(rotated["access_token"]))
            return me.status_code == 401 and "used twice" in me.json()["error"]["message"]

        await eventually(reuse_ended_the_session, "the reused family's access token refused")

        # The profile.
        ada_token = unrelated.json()["access_token"]
        async with users.client(ada_token) as ada_api:
            assert (await ada_api.get("/api/v1/users/me")).json() == ada
            changed = await ada_api.patch(
                "/api/v1/users/me",
                json={
                    "full_name": "Augusta Ada King",
                    "phone": " +44 20 7946 0018 ",
                    "address": "12 Analytical Row\nLondon",
                },
            )
            assert changed.status_code == 200, changed.text
            profile = {
                **ada,
                "full_name": "Augusta Ada King",
                "phone": "+442079460018",
                "address": "12 Analytical Row\nLondon",
            }
            assert changed.json() == profile
            assert (await ada_api.get("/api/v1/users/me")).json() == profile
            unchanged = await ada_api.patch(
                "/api/v1/users/me", json={"full_name": "Augusta Ada King"}
            )
            assert unchanged.json() == profile
            for body in (
                {"phone": "call me"},
                {"full_name": None},
                {"full_name": ""},
                {"address": "x" * 501},
                {"email": "ada@elsewhere.example"},
                {"role": "admin"},
            ):
                response = await ada_api.patch("/api/v1/users/me", json=body)
                assert (response.status_code, response.json()["error"]["code"]) == (
                    422,
                    "validation_error",
                ), body
            assert (await ada_api.get("/api/v1/users/me")).json() == profile
            # Customers are not admins.
            assert (await ada_api.get("/api/v1/users")).status_code == 403
            assert (await ada_api.delete(f"/api/v1/users/{bob['id']}")).status_code == 403
        assert (await api.get("/api/v1/users/me")).status_code == 401
        assert (await api.get("/api/v1/users")).status_code == 401
        assert (await api.delete(f"/api/v1/users/{bob['id']}")).status_code == 401
        forged = await api.get("/api/v1/users/me", headers=bearer(ada_token[:-4] + "AAAA"))
        assert forged.status_code == 401

        # The seeded admin logs in with the normalised address; lists, searches and deletes.
        admin_tokens = await login(api, ADMIN_EMAIL, ADMIN_PASSWORD)
        admin = await verify(jwks, admin_tokens["access_token"])
        assert admin.roles == {"admin", "user"}
        assert admin.email == ADMIN_EMAIL
        more = [
            await register(api, f"user{n}@example.com", BOB_PASSWORD, f"User {n}") for n in range(3)
        ]
        async with users.client(admin_tokens["access_token"]) as admin_api:
            newest_first = [*reversed(more), bob, profile]
            listed = (await admin_api.get("/api/v1/users")).json()
            assert listed["next_cursor"] is None
            assert listed["items"][:5] == newest_first
            assert [u["email"] for u in listed["items"][5:]] == [ADMIN_EMAIL]
            seen, cursor = [], None
            while True:
                params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
                page = (await admin_api.get("/api/v1/users", params=params)).json()
                assert len(page["items"]) <= 2
                seen += page["items"]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert seen == listed["items"]
            found = (await admin_api.get("/api/v1/users", params={"q": "ADA KING"})).json()
            assert found["items"] == [profile]
            found = (await admin_api.get("/api/v1/users", params={"q": "user1@"})).json()
            assert [u["id"] for u in found["items"]] == [more[1]["id"]]
            assert (await admin_api.get("/api/v1/users", params={"q": "%"})).json()["items"] == []
            for params in ({"limit": 0}, {"limit": 101}, {"cursor": "nope"}, {"q": "\u0000"}):
                response = await admin_api.get("/api/v1/users", params=params)
                assert response.status_code == 422, params

            # Deletion: soft, once, never oneself.
            path = f"/api/v1/users/{ada['id']}"
            assert (await admin_api.delete(path)).status_code == 204
            gone = await admin_api.delete(path)
            assert (gone.status_code, gone.json()["error"]["code"]) == (404, "user_not_found")
            assert (await admin_api.delete(f"/api/v1/users/{uuid.uuid4()}")).status_code == 404
            assert (await admin_api.delete("/api/v1/users/not-an-id")).status_code == 404
            itself = await admin_api.delete(f"/api/v1/users/{admin.user_id}")
            assert (itself.status_code, itself.json()["error"]["code"]) == (
                409,
                "cannot_delete_self",
            )
            listed = (await admin_api.get("/api/v1/users", params={"limit": 100})).json()
            assert ada["id"] not in [u["id"] for u in listed["items"]]

        # A deleted account cannot log in, refresh, or use its profile; its address stays taken.
        refused = await api.post(
            "/api/v1/auth/login", json={"email": "ada@example.com", "password": ADA_PASSWORD}
        )
        assert refused.status_code == 401
        assert refused.text == refusal
        after = await api.post("/api/v1/auth/refresh", json={"refresh_token": live_refresh_token})
        assert after.status_code == 401
        async with users.client(ada_token) as ada_api:
            assert (await ada_api.get("/api/v1/users/me")).status_code == 401
            assert (
                await ada_api.patch("/api/v1/users/me", json={"phone": None})
            ).status_code == 401
        again = await api.post(
            "/api/v1/auth/register",
            json={"email": "ada@example.com", "password": ADA_PASSWORD, "full_name": "Ada"},
        )
        assert again.status_code == 409

        # A hash made with weaker parameters is replaced at the next login.
        weak_hash = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(
            BOB_PASSWORD
        )
        await query(
            users.database_url,
            "UPDATE users SET password_hash = %s WHERE id = %s",
            weak_hash,
            bob["id"],
        )
        await login(api, "bob@example.com", BOB_PASSWORD)
        [(rehashed,)] = await query(
            users.database_url, "SELECT password_hash FROM users WHERE id = %s", bob["id"]
        )
        assert rehashed != weak_hash
        assert rehashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
        await login(api, "bob@example.com", BOB_PASSWORD)

    # The events, keyed by the user.
    wanted = [
        (ada["id"], "UserRegistered"),
        (bob["id"], "UserRegistered"),
        (admin.user_id, "UserRegistered"),
        (ada["id"], "UserUpdated"),
        (ada["id"], "UserDeleted"),
    ]

    def complete(events: list[Event]) -> bool:
        return all(of_user(events, subject, kind) for subject, kind in wanted)

    events = await collect_events(kafka_bootstrap, f"{topics}user.event", complete)
    [registered] = of_user(events, ada["id"], "UserRegistered")
    assert registered.source == "/user_service"
    assert registered.record == UserRegistered(
        user_id=ada["id"],
        email="ada@example.com",
        full_name="Ada Lovelace",
        role="customer",
        registered_at=registered.record.registered_at,
    )
    assert registered.record.registered_at.isoformat().startswith(ada["created_at"][:19])
    [admin_registered] = of_user(events, admin.user_id, "UserRegistered")
    assert (admin_registered.record.email, admin_registered.record.role) == (ADMIN_EMAIL, "admin")
    [updated] = of_user(events, ada["id"], "UserUpdated")  # the no-op PATCH emitted nothing
    assert (updated.record.email, updated.record.full_name, updated.record.phone) == (
        "ada@example.com",
        "Augusta Ada King",
        "+442079460018",
    )
    [deleted] = of_user(events, ada["id"], "UserDeleted")
    assert str(deleted.record.user_id) == ada["id"]
    assert of_user(events, bob["id"], "UserUpdated") == []

    # Passwords: Argon2id hashes, and in no table, row or log line.
    hashes = await query(users.database_url, "SELECT email, password_hash FROM users")
    assert len(hashes) == 6
    assert all(h.startswith("$argon2id$") for _, h in hashes)
    tables = await every_row_as_text(users)
    assert {"users", "refresh_tokens", "outbox"} <= set(tables)
    assert tables["refresh_tokens"]
    for table, rows in tables.items():
        for row in rows:
            for password in PASSWORDS:
                assert password not in row, f"a password is in table {table}"
                assert password.encode().hex() not in row, f"a password is in table {table}"
            assert live_refresh_token not in row, f"a refresh token is in table {table}"
    await assert_never_logged(users, caplog, [*PASSWORDS, live_refresh_token])


async def assert_never_logged(
    process: ServiceProcess, caplog: pytest.LogCaptureFixture, secrets: list[str]
) -> None:
    def output() -> str:
        name = f"choreo.stack.{process.service}"
        return "\n".join(r.getMessage() for r in caplog.records if r.name == name)

    async def captured() -> bool:
        return "/api/v1/auth/login" in output() and "/api/v1/users/me" in output()

    await eventually(captured, "the service's log lines are captured")
    text = output()
    assert '"level": "DEBUG"' in text
    for secret in secrets:
        assert secret not in text
