"""The open-intent sweep reads only the intents created since it last had to look (10,000
orders behind it made every pass page through 10,000 intents at the provider)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from payment_service.domain import IntentState
from payment_service.handlers.intents import CLOCK_MARGIN, settle_open_intents
from payment_service.stripe_client import Intent, OpenIntent

NOW = datetime(2026, 11, 30, 20, 0, tzinfo=UTC)
GRACE = timedelta(seconds=60)


class Provider:
    def __init__(self) -> None:
        self.open: list[OpenIntent] = []
        self.asked: list[datetime | None] = []

    async def open_intents(self, created_since: datetime | None = None) -> list[OpenIntent]:
        self.asked.append(created_since)
        return [o for o in self.open if created_since is None or o.created >= created_since]


def opened(seconds_ago: float) -> OpenIntent:
    return OpenIntent(
        intent=Intent(f"pi_{seconds_ago}", IntentState.UNCONFIRMED),
        order_id="00000000-0000-0000-0000-000000000001",
        payment_id=None,
        created=NOW - timedelta(seconds=seconds_ago),
    )


def no_unit_of_work() -> Any:
    raise AssertionError("no intent here is old enough to need one")


async def test_each_pass_lists_from_the_oldest_intent_the_last_one_left_open() -> None:
    provider = Provider()
    charging = cast(Any, SimpleNamespace(gateway=provider, now=lambda: NOW))

    first = await settle_open_intents(no_unit_of_work, charging, grace=GRACE)
    assert provider.asked == [None]  # a process's first pass reads every intent
    assert first.resume_from == NOW - CLOCK_MARGIN  # nothing was open

    provider.open = [opened(10), opened(30)]  # in flight: younger than the grace
    second = await settle_open_intents(
        no_unit_of_work, charging, grace=GRACE, since=first.resume_from
    )
    assert provider.asked[-1] == NOW - CLOCK_MARGIN
    assert second.acted == 0
    assert second.resume_from == NOW - timedelta(seconds=30)  # looked at again next time
