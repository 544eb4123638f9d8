"""Which tokens the revocations refuse, and what the caller is told: a deleted account's, and
an ended session's (by its `sid`), while the other sessions of the same user go on."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import APIRouter

from choreo.auth import SigningKey, StaticKeys, TokenVerifier
from choreo.deps import CurrentUser
from choreo.revocations import SESSION_ENDED, Revoked
from choreo.web import create_app

USER, OTHER_USER = str(uuid.uuid4()), str(uuid.uuid4())
ENDED, LIVE = str(uuid.uuid4()), str(uuid.uuid4())


def test_only_a_revoked_session_or_user_is_refused() -> None:
    revoked = Revoked(users=frozenset({OTHER_USER}), sessions={ENDED: "logged_out"})
    assert revoked.refusal(USER, ENDED) == "the session was logged out: log in again"
    assert revoked.refusal(USER, LIVE) is None
    assert revoked.refusal(USER, None) is None  # a token without a session: only its user
    assert revoked.refusal(OTHER_USER, LIVE) == "the account was deleted"
    assert revoked.refusal(OTHER_USER, ENDED) == "the account was deleted"
    assert Revoked().refusal(USER, ENDED) is None


@pytest.mark.parametrize("reason", [*SESSION_ENDED, "a reason from a newer user service"])
def test_every_reason_says_the_session_ended_and_to_log_in_again(reason: str) -> None:
    refusal = Revoked(sessions={ENDED: reason}).refusal(USER, ENDED)
    assert refusal is not None
    assert "session" in refusal
    assert refusal.endswith(": log in again")


class FixedRevocations:
    """What `current_principal` asks of `app.state.revocations`, without a database."""

    def __init__(self, revoked: Revoked) -> None:
        self.revoked = revoked

    async def refusal(self, user_id: str, session_id: str | None) -> str | None:
        return self.revoked.refusal(user_id, session_id)


async def test_a_token_of_an_ended_session_is_401_naming_why() -> None:
    key = SigningKey.generate()
    router = APIRouter()

    @router.get("/me")
    async def me(user: CurrentUser) -> dict[str, str | None]:
        return {"id": user.user_id, "session": user.session_id}

    app = create_app("test_service", routers=[router])
    app.state.token_verifier = TokenVerifier(StaticKeys(key.jwks()))
    app.state.revocations = FixedRevocations(Revoked(sessions={ENDED: "password_changed"}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

        async def get_me(token: str) -> httpx.Response:
            return await client.get("/me", headers={"Authorization": f"Bearer {token}"})

        refused = await get_me(key.issue(USER, session_id=ENDED))
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        error = refused.json()["error"]
        assert error["code"] == "unauthenticated"
        assert error["message"] == (
            "the session ended when the account's password was changed: log in again"
        )
        live = await get_me(key.issue(USER, session_id=LIVE))
        assert live.status_code == 200
        assert live.json() == {"id": USER, "session": LIVE}
