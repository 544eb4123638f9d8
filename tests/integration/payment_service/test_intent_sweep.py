"""The open-intent sweep across restarts: a process's first pass lists the provider's intents
from where the last pass of any earlier process left off, not every intent ever created."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from choreo.db import create_engine, unit_of_work_factory
from choreo.migrate import migrate
from choreo.stack.stripe import TEST_SECRET_KEY
from payment_service.handlers.intents import CLOCK_MARGIN, sweep_open_intents
from payment_service.stripe_client import OpenIntent, StripeGateway

GRACE = timedelta(seconds=60)


class ListingRecorded:
    """The real gateway, with where each listing of open intents started."""

    def __init__(self, gateway: StripeGateway) -> None:
        self._gateway = gateway
        self.asked: list[datetime | None] = []
        self.found: list[OpenIntent] = []

    async def open_intents(
        self, created_since: datetime | None = None, created_until: datetime | None = None
    ) -> list[OpenIntent]:
        self.asked.append(created_since)
        found = await self._gateway.open_intents(created_since, created_until)
        self.found += found
        return found


async def test_a_restarted_process_lists_from_where_the_last_pass_left_off(
    database_url: str, stripe_api_base: str
) -> None:
    migrate("payment", database_url)
    engine = create_engine(database_url)
    try:
        uow_factory = unit_of_work_factory(engine)

        def process() -> tuple[ListingRecorded, Any]:
            """A new process: nothing in memory but the gateway."""
            gateway = ListingRecorded(StripeGateway(TEST_SECRET_KEY, stripe_api_base))
            return gateway, cast(
                Any, SimpleNamespace(gateway=gateway, now=lambda: datetime.now(UTC))
            )

        first_gateway, first = process()
        started = datetime.now(UTC)
        swept = await sweep_open_intents(uow_factory, first, grace=GRACE)
        # A database that never saw a pass: every intent, once.
        assert first_gateway.asked == [None]
        # From the pass's cutoff (its start less the grace) less the margin, or from an
        # intent other tests left open on the shared emulator, older than the grace.
        cutoffs = (started - GRACE, datetime.now(UTC) - GRACE)
        assert cutoffs[0] - CLOCK_MARGIN <= swept.resume_from <= cutoffs[1] - CLOCK_MARGIN or any(
            intent.created == swept.resume_from for intent in first_gateway.found
        )

        second_gateway, second = process()
        await sweep_open_intents(uow_factory, second, grace=GRACE)
        assert second_gateway.asked == [swept.resume_from]
    finally:
        await engine.dispose()
