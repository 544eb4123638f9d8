"""Wiring of the user service: settings -> signing key, password hasher, tokens -> app, the
admin seeding and the refresh-token purge. The service consumes no events; its relay
publishes `user.event`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from fastapi import APIRouter, FastAPI

from choreo.auth import StaticKeys, TokenVerifier
from choreo.service import Service
from user_service import handlers
from user_service.api import ERROR_STATUSES, router, token_router
from user_service.attempts import AttemptLimit, AttemptLimiter
from user_service.config import Settings
from user_service.keys import UNSEALED_WARNING, load_notification_key, load_signing_key
from user_service.passwords import Passwords
from user_service.purge import run_refresh_token_purge
from user_service.tokens import TokenIssuer


def build(settings: Settings | None = None) -> Service:
    settings = settings or Settings()
    signing_key = load_signing_key(settings)
    reset_token_sealer = load_notification_key(settings)
    passwords = Passwords(
        concurrency=settings.password_hashing_concurrency, queue=settings.password_hashing_queue
    )
    attempts = AttemptLimiter(
        per_address=AttemptLimit(
            settings.credential_attempts_per_address, settings.credential_attempts_window_seconds
        ),
        per_account=AttemptLimit(
            settings.credential_attempts_per_account, settings.credential_attempts_window_seconds
        ),
    )
    tokens = TokenIssuer(
        signing_key,
        access_ttl_seconds=settings.access_token_ttl_seconds,
        refresh_ttl_seconds=settings.refresh_token_ttl_seconds,
    )

    @contextlib.asynccontextmanager
    async def seed_admin(app: FastAPI) -> AsyncIterator[None]:
        # A router's lifespan runs inside the service's (database and broker are up) and
        # before uvicorn listens, so /readyz cannot answer 200 before the admin exists.
        del app
        if settings.admin_email is not None and settings.admin_password is not None:
            await handlers.seed_admin(
                service.unit_of_work()(),
                passwords,
                email=settings.admin_email,
                password=settings.admin_password.get_secret_value(),
            )
        yield

    async def purge(stopping: asyncio.Event) -> None:
        await run_refresh_token_purge(
            stopping,
            service.unit_of_work(),
            interval_seconds=settings.refresh_token_purge_interval_seconds,
        )

    service = Service(
        settings,
        routers=[router, token_router, APIRouter(lifespan=seed_admin)],
        error_statuses=ERROR_STATUSES,
        background=[purge],
        resources={
            "passwords": passwords,
            "tokens": tokens,
            "attempts": attempts,
            "password_reset_ttl": timedelta(seconds=settings.password_reset_token_ttl_seconds),
            "reset_token_sealer": reset_token_sealer,
        },
        # It verifies the tokens it issued with its own key, not with its own JWKS URL.
        token_verifier=TokenVerifier(StaticKeys(signing_key.jwks())),
        start_up_warnings=[] if reset_token_sealer else [UNSEALED_WARNING],
    )
    return service


if __name__ == "__main__":
    build().run()
