"""The user service across a restart: the admin is seeded before the service reports ready, and
only once; refresh tokens expire, and expired ones are purged."""

from __future__ import annotations

import asyncio

from choreo.auth import StaticKeys, TokenVerifier
from choreo.db import create_engine, unit_of_work_factory
from choreo.testing import StartService, query
from user_service.handlers import purge_expired_refresh_tokens

from .conftest import login, register

ADMIN_EMAIL = "ops@example.com"
ADMIN_PASSWORD = "another-long-passphrase"


async def test_admin_seeded_once_and_refresh_tokens_expire_and_are_purged(
    start_service: StartService,
) -> None:
    admin_env = {"CHOREO_ADMIN_EMAIL": ADMIN_EMAIL, "CHOREO_ADMIN_PASSWORD": ADMIN_PASSWORD}
    users = start_service("user", **admin_env)
    # Ready means seeded: the admin logs in on the first try.
    async with users.client() as api:
        first = await login(api, ADMIN_EMAIL, ADMIN_PASSWORD)
    users.stop()

    users = start_service("user", **admin_env, USER_REFRESH_TOKEN_TTL_SECONDS="2")
    async with users.client() as api:
        jwks = (await api.get("/api/v1/auth/jwks")).json()
        again = await login(api, ADMIN_EMAIL, ADMIN_PASSWORD)
        verifier = TokenVerifier(StaticKeys(jwks))
        same_admin = {
            (await verifier.verify(tokens["access_token"])).user_id for tokens in (first, again)
        }
        assert len(same_admin) == 1
        accounts = await query(users.database_url, "SELECT email, role FROM users")
        assert accounts == [(ADMIN_EMAIL, "admin")]
        registrations = await query(
            users.database_url,
            "SELECT count(*) FROM outbox WHERE headers->>'ce_type' = 'UserRegistered'",
        )
        assert registrations == [(1,)]

        # The token issued before the restart outlives it (30 days); the new ones last 2 s.
        kept = await api.post(
            "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
        )
        assert kept.status_code == 200
        await register(api, "eve@example.com", "eves-password", "Eve")
        short = await login(api, "eve@example.com", "eves-password")
        await asyncio.sleep(2.5)
        expired = await api.post(
            "/api/v1/auth/refresh", json={"refresh_token": short["refresh_token"]}
        )
        assert (expired.status_code, expired.json()["error"]["code"]) == (
            401,
            "invalid_refresh_token",
        )
        # Refused by its expiry: the token is still there, and was not revoked.
        still_there = await query(
            users.database_url,
            "SELECT revoked_at IS NULL, expires_at < now() FROM refresh_tokens "
            "WHERE user_id = (SELECT id FROM users WHERE email = 'eve@example.com')",
        )
        assert still_there == [(True, True)]

        [(kept_rows,)] = await query(users.database_url, "SELECT count(*) FROM refresh_tokens")

    # The purge (every hour by default) deletes the expired rows, and only them.
    assert users.database_url is not None
    engine = create_engine(users.database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        purged = await purge_expired_refresh_tokens(unit_of_work_factory(engine)())
    finally:
        await engine.dispose()
    # Eve's, the admin's second login's and the one its first login's rotated into: 2 s each.
    assert purged == 3
    left = await query(
        users.database_url, "SELECT count(*), min(expires_at) > now() FROM refresh_tokens"
    )
    assert left == [(kept_rows - purged, True)]
