"""A consumer with nothing to read polls the broker less often (choreo.consumer.group)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from choreo.consumer.group import IDLE_AFTER_SECONDS, IDLE_FETCH_MAX_WAIT_MS, _FetchPace


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def consumer(wait_ms: int) -> Any:
    return SimpleNamespace(_fetcher=SimpleNamespace(_fetch_max_wait_ms=wait_ms))


def test_an_idle_consumer_waits_longer_and_a_record_brings_its_own_wait_back() -> None:
    clock, polled = Clock(), consumer(20)
    pace = _FetchPace(polled, clock)
    clock.now = IDLE_AFTER_SECONDS - 0.1
    pace.note(0)
    assert (pace.idle, polled._fetcher._fetch_max_wait_ms) == (False, 20)
    clock.now = IDLE_AFTER_SECONDS
    pace.note(0)
    assert (pace.idle, polled._fetcher._fetch_max_wait_ms) == (True, IDLE_FETCH_MAX_WAIT_MS)
    pace.note(3)
    assert (pace.idle, polled._fetcher._fetch_max_wait_ms) == (False, 20)
    clock.now += IDLE_AFTER_SECONDS / 2
    pace.note(0)
    assert polled._fetcher._fetch_max_wait_ms == 20  # idle again only after a quiet spell


def test_a_consumer_that_already_waits_long_is_left_alone() -> None:
    clock, polled = Clock(), consumer(IDLE_FETCH_MAX_WAIT_MS)
    pace = _FetchPace(polled, clock)
    clock.now = 60.0
    pace.note(0)
    assert (pace.idle, polled._fetcher._fetch_max_wait_ms) == (False, IDLE_FETCH_MAX_WAIT_MS)


def test_without_the_fetcher_attribute_nothing_changes() -> None:
    clock = Clock()
    pace = _FetchPace(SimpleNamespace(), clock)
    clock.now = 60.0
    pace.note(0)
    assert pace.idle is False
