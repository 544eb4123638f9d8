"""Helpers of the notification service's integration tests: a SendGrid sink and a Twilio sink,
events as the other services publish them, the service's own database, and the dead-letter
topic."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.partitioner import murmur2

from choreo import records
from choreo.events import Event
from choreo.stack.sendgrid_sink import SINK_API_KEY, SendGridSink
from choreo.stack.sink import SinkPart
from choreo.stack.twilio_sink import TwilioSink
from choreo.testing import ServiceProcess, StartService, free_port, query
from choreo.testing import records as make

PARTITIONS = 3  # what the `topics` fixture creates


class _SinkReader:
    """A provider sink of the stack, read and controlled the way a test does."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    async def messages(self, to: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            response = await client.get("/messages", params={"to": to})
        response.raise_for_status()
        messages: list[dict[str, Any]] = response.json()
        return messages

    async def fail(self, status: int, count: int | None) -> None:
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            response = await client.post("/_control/fail", json={"status": status, "count": count})
        response.raise_for_status()

    async def heal(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            (await client.delete("/_control/fail")).raise_for_status()


class Sink(_SinkReader):
    """The SendGrid sink, read the way a test reads a mailbox."""

    @property
    def host(self) -> str:
        return self.base_url

    async def subjects(self, to: str) -> list[str]:
        return [message["subject"] for message in await self.messages(to)]


class Phones(_SinkReader):
    """The Twilio sink, read the way a test reads the SMS a phone received."""

    async def texts(self, to: str) -> list[str]:
        return [message["body"] for message in await self.messages(to)]


def _running(part: SinkPart) -> Iterator[SinkPart]:
    part.start()
    try:
        yield part
    finally:
        part.stop()


@pytest.fixture(scope="module")
def sendgrid_sink() -> Iterator[SinkPart]:
    yield from _running(SendGridSink(free_port()))


@pytest.fixture
async def sink(sendgrid_sink: SinkPart) -> Sink:
    mailbox = Sink(sendgrid_sink.base_url)
    await mailbox.heal()
    return mailbox


@pytest.fixture(scope="module")
def twilio_sink() -> Iterator[SinkPart]:
    yield from _running(TwilioSink(free_port()))


@pytest.fixture
async def phones(twilio_sink: SinkPart) -> Phones:
    reader = Phones(twilio_sink.base_url)
    await reader.heal()
    return reader


def start_notification(
    start_service: StartService, sink: Sink, phones: Phones | None = None, **env: str
) -> ServiceProcess:
    if phones is not None:
        env = {"TWILIO_API_BASE": phones.base_url, **env}
    return start_service(
        "notification", SENDGRID_HOST=sink.host, SENDGRID_API_KEY=SINK_API_KEY, **env
    )


_phone_numbers = iter(range(100_000))


def phone_number() -> str:
    """A unique valid number (E.164), so tests sharing the sink never read each other's SMS."""
    return f"+1202555{next(_phone_numbers) % 10_000:04d}"


def new_id() -> str:
    return str(uuid.uuid4())


def address(name: str) -> str:
    """A unique address, so tests sharing the sink never read each other's mail."""
    return f"{name}.{uuid.uuid4().hex[:8]}@example.com"


def key_in_partition_of(key: str) -> str:
    """A new order id whose records land in the same partition as `key`'s (behind them)."""

    def partition(text: str) -> int:
        return int((murmur2(text.encode()) & 0x7FFFFFFF) % PARTITIONS)

    while True:
        candidate = new_id()
        if partition(candidate) == partition(key):
            return candidate


# The records other services publish, in the shorthand of these tests.


def user_registered(
    user_id: str, email: str, full_name: str, role: str = "customer"
) -> Event[records.UserRegistered]:
    return make.user_registered(user_id=user_id, email=email, full_name=full_name, role=role)


def user_updated(
    user_id: str, email: str, full_name: str, phone: str | None = None
) -> Event[records.UserUpdated]:
    return make.user_updated(user_id=user_id, email=email, full_name=full_name, phone=phone)


def preferences_changed(
    user_id: str, **kinds: tuple[bool, bool, bool]
) -> Event[records.NotificationPreferencesChanged]:
    """Preferences as the user service publishes them: the defaults, but for `kinds`, each
    given as (email, sms, in_app)."""
    chosen = {
        "order_updates": (True, False, True),
        "payment_updates": (True, False, True),
        "account_notices": (True, False, True),
        "low_stock": (True, False, True),
        **kinds,
    }
    return make.notification_preferences_changed(
        user_id=user_id,
        preferences=[
            records.NotificationPreference(kind=kind, email=email, sms=sms, in_app=in_app)
            for kind, (email, sms, in_app) in chosen.items()
        ],
    )


def user_deleted(user_id: str) -> Event[records.UserDeleted]:
    return make.user_deleted(user_id=user_id)


def order_created(
    order_id: str, user_id: str, quantities: tuple[int, ...] = (1, 2)
) -> Event[records.OrderCreated]:
    return make.order_created(
        order_id=order_id, user_id=user_id, items=make.order_lines(*quantities)
    )


def order_confirmed(
    order_id: str, user_id: str, total: int = 3750
) -> Event[records.OrderConfirmed]:
    return make.order_confirmed(order_id=order_id, user_id=user_id, total_amount=total)


def order_cancelled(
    order_id: str, user_id: str, reason: str, *, charged: bool
) -> Event[records.OrderCancelled]:
    previous_status = "CONFIRMED" if charged else "RESERVED"
    return make.order_cancelled(
        order_id=order_id,
        user_id=user_id,
        reason=reason,
        previous_status=previous_status,
        charged=charged,
    )


def payment_failed(order_id: str, decline_code: str, message: str) -> Event[records.PaymentFailed]:
    return make.payment_failed(
        order_id=order_id, payment_id=new_id(), decline_code=decline_code, message=message
    )


def payment_refunded(order_id: str, amount: int = 3750) -> Event[records.PaymentRefunded]:
    return make.payment_refunded(order_id=order_id, amount=amount)


def low_stock_detected(
    product_id: str, name: str, available: int, threshold: int
) -> Event[records.LowStockDetected]:
    return make.low_stock_detected(
        product_id=product_id, product_name=name, available=available, threshold=threshold
    )


async def applied(process: ServiceProcess, event: Event[records.Record]) -> bool:
    """Whether the service consumed `event` (its inbox holds it)."""
    rows = await query(process.database_url, "SELECT 1 FROM inbox WHERE event_id = %s", event.id)
    return bool(rows)


async def records_handled(service: ServiceProcess, topic: str) -> dict[str, int]:
    """The service's consumer's records of `topic` by outcome, from its /metrics."""
    async with service.client() as client:
        metrics = (await client.get("/metrics")).text
    found: dict[str, int] = {}
    for line in metrics.splitlines():
        if line.startswith("choreo_consumer_records_total{") and f'topic="{topic}"' in line:
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            found[outcome] = int(float(line.rsplit(" ", 1)[1]))
    return found


async def read_records(
    bootstrap: str, topic: str, count: int, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """The first `count` records of `topic`, undecoded (headers and all)."""
    reader = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await reader.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < count:
                for records in (await reader.getmany(timeout_ms=200)).values():
                    found.extend(records)
    finally:
        await reader.stop()
    return found
