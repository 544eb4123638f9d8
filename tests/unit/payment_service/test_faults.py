"""Fault injection: the delay holds a confirmed charge back before it is recorded; by default
nothing is injected."""

from __future__ import annotations

import time

from payment_service.faults import Faults


async def test_the_delay_after_confirm_waits_as_long_as_set() -> None:
    started = time.monotonic()
    await Faults(delay_after_confirm_seconds=0.3).after_confirm()
    assert time.monotonic() - started >= 0.3


async def test_no_fault_by_default() -> None:
    started = time.monotonic()
    await Faults().after_create()
    await Faults().after_confirm()
    assert time.monotonic() - started < 0.1
