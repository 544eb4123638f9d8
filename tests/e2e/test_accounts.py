"""What users of an account expect, through the gateway on `choreo up`: logging out, changing
the password, and resetting a forgotten one by e-mail (issue 13), each ending the access tokens
of the sessions it ends at every service within seconds."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import httpx
import psycopg
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from .conftest import ChoreoUp
from .journey import Gateway

RESET_SUBJECT = "Reset your Choreo password"


async def sign_in(api: httpx.AsyncClient, email: str, password: str) -> dict[str, Any]:
    response = await api.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


async def refreshed(api: httpx.AsyncClient, tokens: dict[str, Any]) -> int:
    response = await api.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    return response.status_code


def auth(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def reset_emails(gateway: Gateway, address: str, count: int) -> list[dict[str, Any]]:
    """The password-reset e-mails to `address`, once there are `count` of them."""
    async with asyncio.timeout(60):
        while True:
            mails = [m for m in await gateway.emails_to(address) if m["subject"] == RESET_SUBJECT]
            if len(mails) >= count:
                return mails
            await asyncio.sleep(0.3)


async def user_events_of(
    running: ChoreoUp, user_id: str, type_: str
) -> list[ConsumerRecord[bytes, bytes]]:
    """The records of `type_` about `user_id` on user.event, undecoded, once there is one."""
    reader = AIOKafkaConsumer(
        "user.event", bootstrap_servers=running.bootstrap_servers, auto_offset_reset="earliest"
    )
    await reader.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(30):
            while not found:
                for records in (await reader.getmany(timeout_ms=200)).values():
                    found += [
                        r
                        for r in records
                        if (r.key or b"") == user_id.encode()
                        and ("ce_type", type_.encode()) in r.headers
                    ]
    finally:
        await reader.stop()
    return found


def token_in(mail: dict[str, Any]) -> str:
    found = re.search(r"reset-password\?token=([A-Za-z0-9_-]+)", mail["content"][0]["value"])
    assert found is not None, mail
    return found.group(1)


async def test_logout_password_change_and_reset_by_email(choreo_up: ChoreoUp) -> None:
    gateway = Gateway(choreo_up)
    customer = await gateway.register(with_card=False)
    email, password = customer.email, customer.password
    changed, reset = f"changed-{uuid.uuid4().hex}", f"reset-{uuid.uuid4().hex}"
    async with gateway.client() as api:
        # Logout ends the session of its refresh token, through the gateway, idempotently (the
        # second time from another session: the first one's access token is ended too).
        session, spare = await sign_in(api, email, password), await sign_in(api, email, password)
        for caller in (session, spare):
            response = await api.post(
                "/auth/logout",
                json={"refresh_token": session["refresh_token"]},
                headers=auth(caller),
            )
            assert response.status_code == 204, response.text
        assert await refreshed(api, session) == 401
        assert (await api.post("/auth/logout")).status_code == 401  # signed-in callers only

        # A password change: the current password is needed; other sessions end; the caller
        # stays signed in with the tokens it gets back, which no cache keeps.
        session, elsewhere = (
            await sign_in(api, email, password),
            await sign_in(api, email, password),
        )
        wrong = {"current_password": f"{password}x", "new_password": changed}
        response = await api.post("/auth/password", json=wrong, headers=auth(session))
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "invalid_current_password"
        right = {"current_password": password, "new_password": changed}
        response = await api.post("/auth/password", json=right, headers=auth(session))
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        current = response.json()
        assert await refreshed(api, elsewhere) == 401
        assert await refreshed(api, session) == 401
        me = await api.get("/users/me", headers=auth(current))
        assert me.status_code == 200
        assert me.json()["email"] == email
        assert (
            await api.post("/auth/login", json={"email": email, "password": password})
        ).status_code == 401
        session = await sign_in(api, email, changed)

        # A reset, asked without a token: the same answer for an address with no account.
        asked = await api.post("/auth/password-reset", json={"email": email})
        nobody = await api.post(
            "/auth/password-reset", json={"email": f"nobody-{uuid.uuid4().hex}@example.com"}
        )
        assert (asked.status_code, asked.text) == (nobody.status_code, nobody.text)
        assert asked.status_code == 202

        # The link arrives by e-mail (the SendGrid sink); it sets the password once.
        [mail] = await reset_emails(gateway, email, 1)
        assert mail["personalizations"][0]["to"][0]["email"] == email
        token = token_in(mail)
        # The token left the user service sealed for the notification service alone: its text
        # is in neither the record on user.event (every consumer and operator reads it) nor the
        # user service's outbox row.
        [record] = await user_events_of(choreo_up, customer.user_id, "PasswordResetRequested")
        assert token.encode() not in (record.value or b"")
        assert all(token.encode() not in (value or b"") for _, value in record.headers)
        with psycopg.connect(choreo_up.database_url("users")) as connection:
            outbox = connection.execute(
                "SELECT value, headers::text FROM outbox WHERE key = %s", (customer.user_id,)
            ).fetchall()
        assert outbox, "the reset's outbox row is kept"
        assert all(token.encode() not in bytes(v) and token not in h for v, h in outbox)
        confirm = {"token": token, "new_password": reset}
        response = await api.post("/auth/password-reset/confirm", json=confirm)
        assert response.status_code == 204, response.text
        again = await api.post("/auth/password-reset/confirm", json=confirm)
        assert again.status_code == 400
        assert again.json()["error"]["code"] == "invalid_reset_token"

        # The new password signs in; the old one and the old session do not.
        await sign_in(api, email, reset)
        old = await api.post("/auth/login", json={"email": email, "password": changed})
        assert old.status_code == 401
        assert await refreshed(api, session) == 401

        # The merged API description has the four routes, the reset ones without a token.
        async with httpx.AsyncClient(base_url=choreo_up.url("gateway")) as front:
            spec = (await front.get("/openapi.json")).json()
        paths = spec["paths"]
        for path in ("logout", "password", "password-reset", "password-reset/confirm"):
            assert "post" in paths[f"/api/v1/auth/{path}"], path
        assert {} in paths["/api/v1/auth/password-reset"]["post"]["security"]
        assert {} in paths["/api/v1/auth/password-reset/confirm"]["post"]["security"]
        assert {} not in paths["/api/v1/auth/password"]["post"]["security"]


LOGGED_OUT = "the session was logged out: log in again"
PASSWORD_CHANGED = "the session ended when the account's password was changed: log in again"
PASSWORD_RESET = "the session ended when the account's password was reset: log in again"


def places(running: ChoreoUp) -> dict[str, str]:
    """Where an access token is checked: through the gateway (to the user and the order
    service), and at the order and payment services directly, bypassing the gateway."""
    return {
        "gateway → user": f"{running.url('gateway')}/api/v1/users/me",
        "gateway → order": f"{running.url('gateway')}/api/v1/orders",
        "order": f"{running.url('order')}/api/v1/orders",
        "payment": f"{running.url('payment')}/api/v1/payment-methods",
    }


async def answers(running: ChoreoUp, tokens: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """The status and error message each place answers a GET with `tokens`' access token."""
    found = {}
    async with httpx.AsyncClient(headers=auth(tokens), timeout=30) as client:
        for place, url in places(running).items():
            response = await client.get(url)
            error = response.json().get("error") if response.status_code != 200 else None
            found[place] = (response.status_code, error["message"] if error else "")
    return found


async def refused_everywhere(
    running: ChoreoUp, refused: list[dict[str, Any]], why: str, accepted: dict[str, Any]
) -> None:
    """Poll until every place refuses each of `refused` (401, saying `why`), within 10 s, and
    accepts `accepted` then."""
    started = time.monotonic()
    wanted = {place: (401, why) for place in places(running)}
    while True:
        seen = [await answers(running, tokens) for tokens in refused]
        if all(answer == wanted for answer in seen):
            break
        assert time.monotonic() < started + 10, seen
        await asyncio.sleep(0.2)
    print(f"{why}: refused everywhere after {time.monotonic() - started:.1f} s")
    assert {place: status for place, (status, _) in (await answers(running, accepted)).items()} == {
        place: 200 for place in places(running)
    }


async def test_an_ended_sessions_access_tokens_are_refused_everywhere_within_seconds(
    choreo_up: ChoreoUp,
) -> None:
    # Found by review: a logout, a password change or a reset revoked refresh tokens only, so the
    # ended sessions' access tokens went on working everywhere for up to their 15 minutes.
    gateway = Gateway(choreo_up)
    customer = await gateway.register(with_card=False)
    email, password = customer.email, customer.password
    changed, reset = f"changed-{uuid.uuid4().hex}", f"reset-{uuid.uuid4().hex}"
    async with gateway.client() as api:
        laptop, phone, tablet = [await sign_in(api, email, password) for _ in range(3)]
        for tokens in (laptop, phone, tablet):
            assert {status for status, _ in (await answers(choreo_up, tokens)).values()} == {200}

        # Logout: that session's access token, issued a moment ago, is refused at the gateway
        # and at the services behind it; the user's other sessions go on.
        response = await api.post(
            "/auth/logout", json={"refresh_token": laptop["refresh_token"]}, headers=auth(laptop)
        )
        assert response.status_code == 204, response.text
        await refused_everywhere(choreo_up, [laptop], LOGGED_OUT, accepted=phone)
        assert (await answers(choreo_up, tablet))["order"] == (200, "")

        # A password change from the phone: the phone's and the tablet's tokens are refused, the
        # pair the change answers with works.
        body = {"current_password": password, "new_password": changed}
        response = await api.post("/auth/password", json=body, headers=auth(phone))
        assert response.status_code == 200, response.text
        current = response.json()
        await refused_everywhere(choreo_up, [phone, tablet], PASSWORD_CHANGED, accepted=current)

        # A reset confirmation ends every session, the one the change handed out included.
        other = await sign_in(api, email, changed)
        asked = await api.post("/auth/password-reset", json={"email": email})
        assert asked.status_code == 202, asked.text
        [mail] = await reset_emails(gateway, email, 1)
        confirm = {"token": token_in(mail), "new_password": reset}
        response = await api.post("/auth/password-reset/confirm", json=confirm)
        assert response.status_code == 204, response.text
        after_reset = await sign_in(api, email, reset)
        await refused_everywhere(choreo_up, [current, other], PASSWORD_RESET, accepted=after_reset)
