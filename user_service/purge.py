"""The refresh-token purge: a background job that deletes refresh tokens (and password-reset
tokens) past their expiry.

A revoked token is kept until it expires, so that presenting it again is still recognised as a
reuse; after that it is refused as unknown, and its row only costs space. Replicas may all
purge: the deletes are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from choreo.db import UnitOfWorkFactory
from user_service.handlers import purge_expired_refresh_tokens

log = logging.getLogger(__name__)


async def run_refresh_token_purge(
    stopping: asyncio.Event, uow_factory: UnitOfWorkFactory, *, interval_seconds: float
) -> None:
    """Every `interval_seconds` until `stopping`, delete the expired refresh tokens."""
    while not stopping.is_set():
        try:
            purged = await purge_expired_refresh_tokens(uow_factory())
            if purged:
                log.info("purged %d expired refresh or reset token(s)", purged)
        except Exception:
            # The database may be away for a while; the next round tries again.
            log.exception("the refresh-token purge failed; retrying in %g s", interval_seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval_seconds)
