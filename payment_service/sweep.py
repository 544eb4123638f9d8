"""The open-intent sweep: a background job that settles or cancels the intents the provider
holds open for this service's orders (handlers/intents.py), at start-up and then periodically.
Replicas may all sweep: each intent is handled under its order's row lock, skipped when held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from choreo.db import UnitOfWorkFactory
from payment_service.handlers import Charging, settle_open_intents

log = logging.getLogger(__name__)


async def run_intent_sweep(
    stopping: asyncio.Event,
    uow_factory: UnitOfWorkFactory,
    charging: Charging,
    *,
    interval_seconds: float,
    grace: timedelta,
) -> None:
    """Now, then every `interval_seconds` until `stopping`, one pass over the open intents."""
    while not stopping.is_set():
        try:
            await settle_open_intents(uow_factory, charging, grace=grace)
        except Exception:
            # Stripe or the database may be away for a while; the next pass tries again.
            log.exception("the open-intent sweep failed; retrying in %g s", interval_seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval_seconds)
