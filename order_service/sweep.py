"""The deadline sweep: a background job that cancels (TIMEOUT) orders the saga did not decide
in time. Replicas may all sweep: each batch skips the rows another one holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from choreo.db import UnitOfWorkFactory
from order_service.handlers import cancel_overdue_orders

log = logging.getLogger(__name__)


async def run_deadline_sweep(
    stopping: asyncio.Event,
    uow_factory: UnitOfWorkFactory,
    *,
    interval_seconds: float,
    batch_size: int,
) -> None:
    """Every `interval_seconds` until `stopping`, cancel overdue orders batch after batch."""
    while not stopping.is_set():
        try:
            while not stopping.is_set():
                cancelled = await cancel_overdue_orders(uow_factory(), batch_size=batch_size)
                if cancelled < batch_size:
                    break
        except Exception:
            # The database may be away for a while; the next round tries again.
            log.exception("the deadline sweep failed; retrying in %g s", interval_seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval_seconds)
