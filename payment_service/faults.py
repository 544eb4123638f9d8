"""Fault injection for the never-charge-twice tests (refused in production by the settings)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Faults:
    """What to do right after the provider created an intent, before its id is committed (an
    orphan intent), or right after it confirmed a charge, before the charge is recorded."""

    kill_after_create: bool = False
    kill_after_confirm: bool = False
    delay_after_confirm_seconds: float = 0.0

    async def after_create(self) -> None:
        if self.kill_after_create:
            log.warning("fault injection: killing the process after creating an intent")
            os.kill(os.getpid(), signal.SIGKILL)

    async def after_confirm(self) -> None:
        if self.kill_after_confirm:
            log.warning("fault injection: killing the process after a confirmed charge")
            os.kill(os.getpid(), signal.SIGKILL)
        if self.delay_after_confirm_seconds > 0:
            log.warning(
                "fault injection: waiting %g s after a confirmed charge",
                self.delay_after_confirm_seconds,
            )
            await asyncio.sleep(self.delay_after_confirm_seconds)
