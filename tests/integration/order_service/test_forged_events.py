"""Events the order service's own facts contradict, or that come from a service that does not
own their type, are dead-lettered as rejected and change nothing (issue 13, finding 1a)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer

from choreo import kafka
from choreo.auth import SigningKey
from choreo.avro import default_store
from choreo.events import Event, headers_of
from choreo.records import Record
from choreo.testing import EVENT_SIGNERS, StartService, publish

from .conftest import (
    StandInInventory,
    payment_failed,
    payment_succeeded,
    stock_reserved,
    wait_for_status,
    wait_for_timeline,
)
from .test_orders import place


def with_data(event: Event[Record], **data: Any) -> Event[Record]:
    return Event(dataclasses.replace(event.record, **data))


def from_source(event: Event[Record], source: str) -> Event[Record]:
    return dataclasses.replace(event, source=source, id=str(uuid.uuid4()))


async def dead_letters(bootstrap: str, topic: str, count: int) -> list[dict[str, str]]:
    """The headers of the first `count` dead letters on `topic`."""
    reader = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await reader.start()
    found: list[dict[str, str]] = []
    try:
        async with asyncio.timeout(30):
            while len(found) < count:
                for records in (await reader.getmany(timeout_ms=200)).values():
                    found += [
                        {k: (v or b"").decode() for k, v in record.headers} for record in records
                    ]
    finally:
        await reader.stop()
    return found


async def test_forged_payment_results_are_rejected_and_change_nothing(
    start_service: StartService,
    inventory: StandInInventory,
    signing_key: SigningKey,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    mug = inventory.add("Mug", 1250)
    service = start_service("order", INVENTORY_SERVICE_URL=inventory.url)
    async with service.client(signing_key.issue(str(uuid.uuid4()))) as api:
        order = await place(api, (mug, 2))
        await publish(kafka_bootstrap, topics, stock_reserved(order))
        await wait_for_status(api, order["id"], "RESERVED")
        forged = [
            from_source(payment_succeeded(order), "/attacker"),
            from_source(payment_succeeded(order), "/inventory_service"),
            with_data(payment_succeeded(order), amount=1),
            with_data(payment_succeeded(order), currency="EUR"),
            # A forged failure would cancel an order about to be paid.
            with_data(payment_failed(order), amount=order["total"] + 1),
        ]
        await publish(kafka_bootstrap, topics, *forged)
        rejected = await dead_letters(kafka_bootstrap, f"{topics}order.dlq", len(forged))
        assert sorted(letter["ce_id"] for letter in rejected) == sorted(e.id for e in forged)
        assert [letter["dlq.error.type"] for letter in rejected].count("RejectedEventError") == 2, (
            rejected
        )
        assert [letter["dlq.error.type"] for letter in rejected].count(
            "PaymentMismatchError"
        ) == 3, rejected
        unchanged = (await api.get(f"/api/v1/orders/{order['id']}")).json()
        assert (unchanged["status"], unchanged["charged"]) == ("RESERVED", False)

        # The payment service's own result still decides the order.
        await publish(kafka_bootstrap, topics, payment_succeeded(order))
        await wait_for_timeline(api, order["id"], "PaymentSucceeded")
        confirmed = await wait_for_status(api, order["id"], "CONFIRMED")
        assert confirmed["charged"] is True


async def test_a_payment_result_the_payment_service_did_not_sign_is_rejected(
    start_service: StartService,
    inventory: StandInInventory,
    signing_key: SigningKey,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    """Finding 1's exact input: right order, amount, currency and `ce_source`, written by
    someone who can write to the broker but holds no payment service key."""
    mug = inventory.add("Mug", 1250)
    service = start_service("order", INVENTORY_SERVICE_URL=inventory.url)
    async with service.client(signing_key.issue(str(uuid.uuid4()))) as api:
        order = await place(api, (mug, 2))
        await publish(kafka_bootstrap, topics, stock_reserved(order))
        await wait_for_status(api, order["id"], "RESERVED")
        unsigned = dataclasses.replace(payment_succeeded(order), source="/payment_service")
        by_inventory = payment_succeeded(order)
        await put_unsigned(kafka_bootstrap, f"{topics}payment.event", unsigned)
        await publish(kafka_bootstrap, topics, by_inventory, signer=EVENT_SIGNERS["inventory"])
        rejected = await dead_letters(kafka_bootstrap, f"{topics}order.dlq", 2)
        assert {(letter["ce_id"], letter["dlq.error.type"]) for letter in rejected} == {
            (unsigned.id, "RejectedEventError"),
            (by_inventory.id, "RejectedEventError"),
        }
        assert {letter["dlq.error.message"] for letter in rejected} == {
            "the record is not signed; payment.event takes payment's only",
            "the record is not signed by the payment service's key",
        }
        unchanged = (await api.get(f"/api/v1/orders/{order['id']}")).json()
        assert (unchanged["status"], unchanged["charged"]) == ("RESERVED", False)


async def put_unsigned(bootstrap: str, topic: str, event: Event[Record]) -> None:
    """`event` as a plain Kafka client writes it: the envelope, no signature."""
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic,
            default_store().encode(event.type, event.record.to_avro()),
            key=event.subject.encode(),
            headers=[(k, v.encode()) for k, v in headers_of(event).items()],
        )
    finally:
        await producer.stop()
