"""An e-mail that SendGrid refused, found and replayed with `choreo dlq` (on `choreo up`, and on
docker-compose in tests/containers)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from .journey import Gateway, System, subject_of


async def records_seen(running: System, service: str) -> float:
    """How many records the service's consumer has handled (applied, skipped, dead-lettered)."""
    async with httpx.AsyncClient(base_url=running.url(service)) as client:
        metrics = (await client.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("choreo_consumer_records_total{")
    )


async def end_offsets(running: System) -> dict[str, int]:
    report = await running.cli("topics")
    return {topic["topic"]: topic["end_offset"] for topic in report["topics"]}


async def confirmations(gateway: Gateway, address: str) -> int:
    return sum("confirmed" in subject_of(m) for m in await gateway.emails_to(address))


async def test_a_refused_email_is_dead_lettered_then_replayed_exactly_once(
    system: System,
) -> None:
    gateway = Gateway(system)
    sink = httpx.AsyncClient(base_url=system.url("sendgrid"))
    product = await gateway.product()
    customer = await gateway.register()
    async with asyncio.timeout(30):
        while not await gateway.emails_to(customer.email):  # the welcome e-mail is out
            await asyncio.sleep(0.2)

    # 400: a refusal that can never pass, so dead-lettered at once (a 5xx is waited out).
    await sink.post("/_control/fail", json={"status": 400})
    try:
        order_id = await gateway.order(customer, product)
        assert (await gateway.settled(customer, order_id))["status"] == "CONFIRMED"
        entry: dict[str, Any] = {}
        async with asyncio.timeout(60):
            while not entry:
                listed = await system.cli("dlq", "list", "--type", "OrderConfirmed")
                entry = next((e for e in listed["entries"] if e["key"] == order_id), {})
                await asyncio.sleep(1.0)
    finally:
        await sink.delete("/_control/fail")

    assert entry["topic"] == "notification.dlq"
    assert entry["original_topic"] == "order.event"
    assert entry["consumer"] == "notification_service"
    assert entry["attempts"] == 1
    assert entry["error_type"] == "EmailRefusedError"
    others = await system.cli("dlq", "list", "--type", "UserDeleted")
    assert all(e["key"] != order_id for e in others["entries"])

    dry = await system.cli("dlq", "replay", "--all", "--dry-run")
    assert dry["dry_run"] is True
    assert any(e.get("id") == entry["id"] for e in dry["entries"])
    await asyncio.sleep(3.0)
    assert await confirmations(gateway, customer.email) == 0

    seen_before = {s: await records_seen(system, s) for s in ("inventory", "payment", "order")}
    offsets_before = await end_offsets(system)
    await system.cli("dlq", "replay", entry["id"])
    async with asyncio.timeout(30):
        while await confirmations(gateway, customer.email) == 0:
            await asyncio.sleep(0.3)
    # Only the notification service got the replay: nothing new on order.event, and the other
    # consumers of order.event handled no record meanwhile (not even a skipped duplicate).
    offsets_after = await end_offsets(system)
    assert offsets_after["order.event"] == offsets_before["order.event"]
    assert offsets_after["notification.retry"] == offsets_before["notification.retry"] + 1
    for service, seen in seen_before.items():
        assert await records_seen(system, service) == seen, service
    await system.cli("dlq", "replay", entry["id"])
    await asyncio.sleep(5.0)  # a second e-mail would be out by now
    assert await confirmations(gateway, customer.email) == 1
    await sink.aclose()
