"""The open-intent sweep reads only the intents created since it last had to look (10,000
orders behind it made every pass page through 10,000 intents at the provider), and each intent
about once: not while it is younger than the grace."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from payment_service.domain import IntentState
from payment_service.handlers.intents import CLOCK_MARGIN, settle_open_intents
from payment_service.stripe_client import Intent, OpenIntent

NOW = datetime(2026, 11, 30, 20, 0, tzinfo=UTC)
GRACE = timedelta(seconds=60)


class Provider:
    """Lists its open intents by creation time, as Stripe's `created[gte|lte]` filters do."""

    def __init__(self) -> None:
        self.open: list[OpenIntent] = []
        self.asked: list[tuple[datetime | None, datetime | None]] = []
        self.listed: list[str] = []

    async def open_intents(
        self, created_since: datetime | None = None, created_until: datetime | None = None
    ) -> list[OpenIntent]:
        self.asked.append((created_since, created_until))
        found = [
            o
            for o in self.open
            if (created_since is None or o.created >= created_since)
            and (created_until is None or o.created <= created_until)
        ]
        self.listed += [o.intent.id for o in found]
        return found


def opened(seconds_ago: float, now: datetime = NOW) -> OpenIntent:
    return OpenIntent(
        intent=Intent(f"pi_{seconds_ago}", IntentState.UNCONFIRMED),
        order_id="00000000-0000-0000-0000-000000000001",
        payment_id=None,
        created=now - timedelta(seconds=seconds_ago),
    )


def no_unit_of_work() -> Any:
    raise AssertionError("no intent here is old enough to need one")


def charging_at(provider: Provider, now: datetime) -> Any:
    return cast(Any, SimpleNamespace(gateway=provider, now=lambda: now))


async def test_a_pass_lists_only_intents_older_than_the_grace() -> None:
    provider = Provider()
    first = await settle_open_intents(no_unit_of_work, charging_at(provider, NOW), grace=GRACE)
    assert provider.asked == [(None, NOW - GRACE)]  # a process's first pass reads from the first
    assert first.resume_from == NOW - GRACE - CLOCK_MARGIN  # nothing was left open

    provider.open = [opened(10), opened(30)]  # in flight: younger than the grace
    second = await settle_open_intents(
        no_unit_of_work, charging_at(provider, NOW), grace=GRACE, since=first.resume_from
    )
    assert provider.asked[-1] == (NOW - GRACE - CLOCK_MARGIN, NOW - GRACE)
    assert provider.listed == []  # not read while young ...
    assert second.acted == 0
    # ... and the next pass's window holds them.
    assert all(second.resume_from <= o.created for o in provider.open)


async def test_passes_a_minute_apart_overlap_only_by_the_clock_margin() -> None:
    provider = Provider()
    since = None
    for minute in range(3):
        now = NOW + timedelta(minutes=minute)
        swept = await settle_open_intents(
            no_unit_of_work, charging_at(provider, now), grace=GRACE, since=since
        )
        since = swept.resume_from
    windows = provider.asked[1:]
    for (_, until), (next_since, _) in itertools.pairwise(windows):
        assert until is not None
        assert next_since is not None
        assert until - next_since == CLOCK_MARGIN  # so an intent is read by one pass, or two
