"""The user service as a process on real PostgreSQL and the real broker: logout, password
change, and password reset (its request, the PasswordResetRequested event, its confirmation)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import httpx
import jwt
import pytest

from choreo.events import Event
from choreo.sealing import password_reset_context
from choreo.testing import NOTIFICATION_OPENER, StartService, collect_events, eventually, query

from .conftest import bearer, login, register

ADA = "ada@example.com"
ADA_PASSWORD = "Analytical-Engine-1843"
NEW_PASSWORD = "a rather longer passphrase"
RESET_PASSWORD = "yet another passphrase"
RESET = "/api/v1/auth/password-reset"
CONFIRM = "/api/v1/auth/password-reset/confirm"


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    return error


async def refresh(api: httpx.AsyncClient, tokens: dict[str, Any]) -> httpx.Response:
    return await api.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def opened(reset: Event) -> str:
    """The token of a PasswordResetRequested, opened as the notification service opens it (with
    this run's key, for the account and expiry the event names): the event holds it sealed."""
    assert reset.record.token == ""
    context = password_reset_context(str(reset.record.user_id), reset.record.expires_at)
    return NOTIFICATION_OPENER.open(reset.record.sealed_token, context).decode()


async def me(api: httpx.AsyncClient, tokens: dict[str, Any]) -> httpx.Response:
    return await api.get("/api/v1/users/me", headers=bearer(tokens["access_token"]))


async def session_ended(api: httpx.AsyncClient, tokens: dict[str, Any], why: str) -> None:
    """Wait until the access token of `tokens` is refused (the service re-reads its revocations
    at most once a second), saying `why`."""

    async def refused_now() -> bool:
        response = await me(api, tokens)
        if response.status_code == 200:
            return False
        assert refused(response, 401, "unauthenticated")["message"] == why
        return True

    await eventually(refused_now, f"the access token refused: {why}", timeout=10)


LOGGED_OUT = "the session was logged out: log in again"
PASSWORD_CHANGED = "the session ended when the account's password was changed: log in again"
PASSWORD_RESET = "the session ended when the account's password was reset: log in again"


def sid(tokens: dict[str, Any]) -> str:
    """The session an access token belongs to (read, not verified: the service verifies)."""
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    return str(claims["sid"])


async def sessions_revoked(
    bootstrap: str, topics: str, user_id: str, count: int
) -> list[tuple[str, set[str]]]:
    """The reason and sessions of each SessionsRevoked of `user_id`, once there are `count`."""

    def of_user(events: list[Event]) -> list[Event]:
        return [e for e in events if e.type == "SessionsRevoked" and e.subject == user_id]

    events = await collect_events(
        bootstrap, f"{topics}user.event", lambda events: len(of_user(events)) >= count
    )
    return [
        (str(e.record.reason), {str(session) for session in e.record.session_ids})
        for e in of_user(events)
    ]


async def test_logout_and_password_change_end_sessions(
    start_service: StartService, kafka_bootstrap: str, topics: str
) -> None:
    users = start_service("user", USER_CREDENTIAL_ATTEMPTS_PER_ACCOUNT="100")
    async with users.client() as api:
        ada = await register(api, ADA, ADA_PASSWORD, "Ada Lovelace")
        laptop, phone = await login(api, ADA, ADA_PASSWORD), await login(api, ADA, ADA_PASSWORD)

        # Logout with a refresh token ends that session only, its refresh and access tokens; the
        # same logout again (from the other session: the first's token is no more) changes
        # nothing.
        body = {"refresh_token": laptop["refresh_token"]}
        for tokens in (laptop, phone):
            response = await api.post(
                "/api/v1/auth/logout", json=body, headers=bearer(tokens["access_token"])
            )
            assert response.status_code == 204, response.text
        refused(await refresh(api, laptop), 401, "invalid_refresh_token")
        await session_ended(api, laptop, LOGGED_OUT)
        assert (await me(api, phone)).status_code == 200
        phone = (await refresh(api, phone)).json()
        assert (await me(api, phone)).status_code == 200  # a rotation is the same session
        # Another user's refresh token is not the caller's to revoke.
        await register(api, "bob@example.com", "difference engine no 2", "Bob")
        bob = await login(api, "bob@example.com", "difference engine no 2")
        other = {"refresh_token": bob["refresh_token"]}
        auth = bearer(phone["access_token"])
        response = await api.post("/api/v1/auth/logout", json=other, headers=auth)
        assert response.status_code == 204
        assert (await refresh(api, bob)).status_code == 200
        assert (await me(api, bob)).status_code == 200
        # Without a token, every session of the caller; only signed-in callers.
        assert (await api.post("/api/v1/auth/logout")).status_code == 401
        tablet = await login(api, ADA, ADA_PASSWORD)
        response = await api.post("/api/v1/auth/logout", headers=auth)
        assert response.status_code == 204
        refused(await refresh(api, phone), 401, "invalid_refresh_token")
        refused(await refresh(api, tablet), 401, "invalid_refresh_token")
        await session_ended(api, phone, LOGGED_OUT)
        await session_ended(api, tablet, LOGGED_OUT)
        reasons = await query(
            users.database_url,
            "SELECT DISTINCT revoked_reason FROM refresh_tokens WHERE user_id = %s",
            ada["id"],
        )
        assert {reason for (reason,) in reasons} == {"logged_out", "rotated"}

        # A password change needs the current password and a new one the policy accepts.
        session, other_session = (
            await login(api, ADA, ADA_PASSWORD),
            await login(api, ADA, ADA_PASSWORD),
        )
        auth = bearer(session["access_token"])
        change = "/api/v1/auth/password"
        wrong = {"current_password": "Analytical-Engine-1842", "new_password": NEW_PASSWORD}
        error = refused(
            await api.post(change, json=wrong, headers=auth), 403, "invalid_current_password"
        )
        assert "Analytical" not in str(error)
        weak = {"current_password": ADA_PASSWORD, "new_password": "ada lovelace 1843"}
        error = refused(await api.post(change, json=weak, headers=auth), 422, "validation_error")
        assert error["details"][0]["type"] == "password_personal"
        assert error["details"][0]["loc"] == ["body", "new_password"]
        assert "lovelace" not in str(error)
        refused(await api.post(change, json=weak), 401, "unauthenticated")
        right = {"current_password": ADA_PASSWORD, "new_password": NEW_PASSWORD}
        response = await api.post(change, json=right, headers=auth)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        fresh = response.json()
        assert set(fresh) == {"access_token", "token_type", "expires_in", "refresh_token"}
        # Every earlier session ends, access tokens too; the one handed back goes on; the old
        # password fails.
        refused(await refresh(api, session), 401, "invalid_refresh_token")
        refused(await refresh(api, other_session), 401, "invalid_refresh_token")
        for ended in (session, other_session):
            await session_ended(api, ended, PASSWORD_CHANGED)
        assert (await me(api, fresh)).status_code == 200
        assert (await refresh(api, fresh)).status_code == 200
        bad = {"email": ADA, "password": ADA_PASSWORD}
        refused(await api.post("/api/v1/auth/login", json=bad), 401, "invalid_credentials")
        await login(api, ADA, NEW_PASSWORD)

    # Every other service learns of each ending once, naming the sessions not ended before.
    wanted = [
        ("logged_out", [laptop]),
        ("logged_out", [phone, tablet]),
        ("password_changed", [session, other_session]),
    ]
    ended_sessions = await sessions_revoked(kafka_bootstrap, topics, ada["id"], len(wanted))
    assert ended_sessions == [(reason, {sid(t) for t in ts}) for reason, ts in wanted]


async def test_a_refresh_racing_a_logout_leaves_no_live_refresh_token(
    start_service: StartService,
) -> None:
    """A refresh and a logout of the same session at once: whichever wins, the session ends.
    Before the account's row lock, the refresh's new token could be inserted after the logout
    had revoked the family, and go on minting tokens."""
    users = start_service(
        "user",
        USER_CREDENTIAL_ATTEMPTS_PER_ACCOUNT="1000",
        USER_CREDENTIAL_ATTEMPTS_PER_ADDRESS="1000",
    )
    async with users.client() as api:
        await register(api, ADA, ADA_PASSWORD, "Ada Lovelace")
        leaked = []
        for _ in range(25):
            tokens = await login(api, ADA, ADA_PASSWORD)
            rotated, logged_out = await asyncio.gather(
                refresh(api, tokens),
                api.post(
                    "/api/v1/auth/logout",
                    json={"refresh_token": tokens["refresh_token"]},
                    headers=bearer(tokens["access_token"]),
                ),
            )
            assert logged_out.status_code == 204, logged_out.text
            if rotated.status_code == 200:  # the refresh went first: its new token is ended too
                leaked.append((await refresh(api, rotated.json())).status_code)
        assert set(leaked) <= {401}, leaked


async def test_password_reset_by_emailed_single_use_token(
    start_service: StartService,
    topics: str,
    kafka_bootstrap: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="choreo.stack")
    users = start_service(
        "user",
        USER_LOG_LEVEL="DEBUG",
        USER_PASSWORD_RESET_TOKEN_TTL_SECONDS="60",
        USER_CREDENTIAL_ATTEMPTS_PER_ACCOUNT="100",
        USER_CREDENTIAL_ATTEMPTS_PER_ADDRESS="100",
    )
    async with users.client() as api:
        ada = await register(api, ADA, ADA_PASSWORD, "Ada Lovelace")
        gone = await register(api, "gone@example.com", ADA_PASSWORD, "Gone")
        await query(
            users.database_url, "UPDATE users SET deleted_at = now() WHERE id = %s", gone["id"]
        )
        session = await login(api, ADA, ADA_PASSWORD)

        # The same answer for an account, no account, a deleted one, and no address at all.
        answers = [
            await api.post(RESET, json={"email": email})
            for email in (" Ada@Example.com ", "nobody@example.com", "gone@example.com", "x")
        ]
        assert {(a.status_code, a.text) for a in answers} == {(202, answers[0].text)}
        assert "If an account has this e-mail address" in answers[0].json()["message"]
        await api.post(RESET, json={"email": ADA})  # a second link, for the same account

        # An event for the live account only, carrying the token sealed to the notification
        # service's key; its digest only in the table, and the token text in no outbox row.
        def two_for_ada(events: list[Event]) -> bool:
            return len([e for e in events if e.type == "PasswordResetRequested"]) >= 2

        events = await collect_events(kafka_bootstrap, f"{topics}user.event", two_for_ada)
        resets = [e for e in events if e.type == "PasswordResetRequested"]
        assert {(e.subject, e.record.email, e.record.full_name) for e in resets} == {
            (ada["id"], ADA, "Ada Lovelace")
        }
        first, second = (opened(e) for e in resets)
        assert len(first) >= 43  # 256 bits, URL-safe base64
        outbox = await query(users.database_url, "SELECT value, headers::text FROM outbox")
        assert len(outbox) >= 4  # the two registrations and the two resets
        for value, headers in outbox:
            assert all(t.encode() not in bytes(value) and t not in headers for t in (first, second))
        rows = await query(
            users.database_url,
            "SELECT token_digest, expires_at - created_at FROM password_reset_tokens "
            "WHERE user_id = %s ORDER BY created_at",
            ada["id"],
        )
        assert [bytes(d) for d, _ in rows] == [digest(first), digest(second)]
        assert all(59 <= ttl.total_seconds() <= 61 for _, ttl in rows)

        # Unknown tokens and refused passwords change nothing.
        refused(
            await api.post(CONFIRM, json={"token": "x" * 43, "new_password": RESET_PASSWORD}),
            400,
            "invalid_reset_token",
        )
        weak = await api.post(CONFIRM, json={"token": first, "new_password": "password1"})
        assert refused(weak, 422, "validation_error")["details"][0]["type"] == "password_common"

        # The first token sets the password, once; the other is void; every session ends.
        response = await api.post(CONFIRM, json={"token": first, "new_password": RESET_PASSWORD})
        assert response.status_code == 204, response.text
        for token in (first, second):
            again = await api.post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD})
            refused(again, 400, "invalid_reset_token")
        refused(await refresh(api, session), 401, "invalid_refresh_token")
        await session_ended(api, session, PASSWORD_RESET)
        assert await sessions_revoked(kafka_bootstrap, topics, ada["id"], 1) == [
            ("password_reset", {sid(session)})
        ]
        bad = {"email": ADA, "password": ADA_PASSWORD}
        refused(await api.post("/api/v1/auth/login", json=bad), 401, "invalid_credentials")
        await login(api, ADA, RESET_PASSWORD)

        # An expired token is refused.
        await api.post(RESET, json={"email": ADA})

        def three(events: list[Event]) -> bool:
            return len([e for e in events if e.type == "PasswordResetRequested"]) >= 3

        events = await collect_events(kafka_bootstrap, f"{topics}user.event", three)
        third = opened([e for e in events if e.type == "PasswordResetRequested"][-1])
        await query(
            users.database_url,
            "UPDATE password_reset_tokens SET expires_at = now() - interval '1 second' "
            "WHERE token_digest = %s",
            digest(third),
        )
        expired = await api.post(CONFIRM, json={"token": third, "new_password": NEW_PASSWORD})
        refused(expired, 400, "invalid_reset_token")
        await login(api, ADA, RESET_PASSWORD)

    await asyncio.sleep(0.5)  # the last log lines
    logged = "\n".join(
        r.getMessage() for r in caplog.records if r.name == f"choreo.stack.{users.service}"
    )
    assert "password reset of user" in logged
    for token in (first, second, third):
        assert token not in logged


async def test_reset_requests_are_limited_per_account_and_per_address_alike(
    start_service: StartService,
) -> None:
    users = start_service(
        "user", USER_CREDENTIAL_ATTEMPTS_PER_ACCOUNT="2", USER_CREDENTIAL_ATTEMPTS_PER_ADDRESS="5"
    )
    async with users.client() as api:
        await register(api, ADA, ADA_PASSWORD, "Ada Lovelace")

        async def ask(email: str) -> int:
            return (await api.post(RESET, json={"email": email})).status_code

        # Two a window for an account, whether or not it exists: a third is refused alike.
        assert [await ask(ADA) for _ in range(3)] == [202, 202, 429]
        assert [await ask("nobody@example.com") for _ in range(3)] == [202, 202, 429]
        # Five a window from one address, whatever the accounts.
        assert await ask("carol@example.com") == 202
        refused(await api.post(RESET, json={"email": "dan@example.com"}), 429, "rate_limited")
    rows = await query(users.database_url, "SELECT count(*) FROM password_reset_tokens")
    assert rows == [(2,)]
