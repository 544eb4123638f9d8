"""Wiring of the user service: settings -> signing key, password hasher, tokens -> app, the
admin seeding (before it serves) and the refresh-token purge. The service consumes no events;
its relay publishes `user.event`."""

from __future__ import annotations

import logging
from datetime import timedelta

from choreo.auth import StaticKeys, TokenVerifier
from choreo.service import PeriodicJob, Service
from user_service import handlers
from user_service.api import ERROR_STATUSES, router, token_router
from user_service.attempts import AttemptLimit, AttemptLimiter
from user_service.config import Settings
from user_service.keys import UNSEALED_WARNING, load_notification_key, load_signing_key
from user_service.passwords import Passwords
from user_service.tokens import TokenIssuer

log = logging.getLogger(__name__)


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

    async def seed_admin() -> None:
        if settings.admin_email is not None and settings.admin_password is not None:
            await handlers.seed_admin(
                service.unit_of_work()(),
                passwords,
                email=settings.admin_email,
                password=settings.admin_password.get_secret_value(),
            )

    async def purge_expired_tokens() -> None:
        purged = await handlers.purge_expired_refresh_tokens(service.unit_of_work()())
        if purged:
            log.info("purged %d expired refresh or reset token(s)", purged)

    service = Service(
        settings,
        routers=[router, token_router],
        error_statuses=ERROR_STATUSES,
        on_start=[seed_admin],
        # A revoked refresh token is kept until it expires, so that presenting it again is
        # still recognised as a reuse; after that its row only costs space. Replicas may all
        # purge: the deletes are idempotent.
        periodic=[
            PeriodicJob(
                "the refresh-token purge",
                settings.refresh_token_purge_interval_seconds,
                purge_expired_tokens,
            )
        ],
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
