"""How each saga ended, as `order.event` says: a reader started before the load, following the
topic from its end, that notes each order's OrderConfirmed or OrderCancelled."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from aiokafka import TopicPartition

from choreo import kafka
from choreo.avro import default_store
from choreo.cli.broker import Broker
from choreo.cli.records import view

TOPIC = "order.event"


@dataclass(frozen=True)
class Outcome:
    type: str
    """OrderConfirmed or OrderCancelled."""
    reason: str | None
    """OrderCancelled's reason (OUT_OF_STOCK, PAYMENT_FAILED, TIMEOUT, ...)."""
    at: float
    """When it was put on the topic (the record's timestamp, set by the order service's relay
    when it sent it), in seconds since the epoch."""
    seen: float
    """When this reader got it."""


class Outcomes:
    """`async with Outcomes(...) as outcomes:` reads from the topic's end at entry on."""

    def __init__(
        self, bootstrap_servers: str, prefix: str, security: kafka.KafkaSecurity, *, fast: bool
    ) -> None:
        self._broker = Broker(
            bootstrap_servers,
            prefix,
            security,
            fetch_max_wait_ms=kafka.FAST_FETCH_MAX_WAIT_MS if fast else kafka.FETCH_MAX_WAIT_MS,
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ended: dict[str, Outcome] = {}
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}
        self.records = 0
        """Every record read, the orders of others included."""
        self.undecodable = 0

    async def __aenter__(self) -> Self:
        await self._broker.__aenter__()
        try:
            topic = self._broker.require_topic(TOPIC)
            _, end = await self._broker.offsets(self._broker.partitions(topic))
        except BaseException:
            await self._broker.__aexit__(None, None, None)
            raise
        self._task = asyncio.create_task(self._follow(end), name="bench-outcomes")
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._broker.__aexit__(kind, error, traceback)

    async def _follow(self, start: dict[TopicPartition, int]) -> None:
        store = default_store()
        async for record in self._broker.follow(start, self._stop):
            self.records += 1
            shown = view(record, store)
            if shown.value is None or "order_id" not in shown.value or shown.type is None:
                self.undecodable += 1
                continue
            order_id = str(shown.value["order_id"])
            if order_id in self._ended:
                continue  # a redelivery: the first one counts
            reason = shown.value.get("reason")
            outcome = Outcome(
                type=shown.type,
                reason=str(reason) if reason is not None else None,
                at=record.timestamp / 1000,
                seen=time.time(),
            )
            self._ended[order_id] = outcome
            waiter = self._waiting.pop(order_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(outcome)

    def of(self, order_id: str) -> Outcome | None:
        return self._ended.get(order_id)

    def check(self) -> None:
        """Raise what stopped the reader, if it stopped."""
        if self._task is not None and self._task.done() and not self._stop.is_set():
            self._task.result()
            raise RuntimeError(f"the reader of {TOPIC} stopped")

    async def wait(self, order_id: str, until: float) -> Outcome | None:
        """The order's outcome once seen, or None at `until` (seconds since the epoch)."""
        found = self._ended.get(order_id)
        if found is not None:
            return found
        self.check()
        waiter = self._waiting.setdefault(order_id, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), max(0.0, until - time.time()))
        except TimeoutError:
            return None
