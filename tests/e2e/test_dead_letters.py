"""An e-mail that SendGrid kept refusing, found and replayed with `choreo dlq`, on `choreo up`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import httpx

from .conftest import ChoreoUp
from .journey import Gateway, subject_of


async def choreo(running: ChoreoUp, *arguments: str) -> Any:
    """Run `choreo ARGS --json` against the stack as an operator would; its parsed output."""
    command = [sys.executable, "-c", "from choreo.cli import main; main()", *arguments, "--json"]
    environment = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": running.bootstrap_servers}
    done = await asyncio.to_thread(
        subprocess.run, command, env=environment, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def confirmations(gateway: Gateway, address: str) -> int:
    return sum("confirmed" in subject_of(m) for m in await gateway.emails_to(address))


async def test_a_refused_email_is_dead_lettered_then_replayed_exactly_once(
    choreo_up: ChoreoUp,
) -> None:
    gateway = Gateway(choreo_up)
    sink = httpx.AsyncClient(base_url=choreo_up.url("sendgrid"))
    product = await gateway.product()
    customer = await gateway.register()
    async with asyncio.timeout(30):
        while not await gateway.emails_to(customer.email):  # the welcome e-mail is out
            await asyncio.sleep(0.2)

    await sink.post("/_control/fail", json={"status": 503})
    try:
        order_id = await gateway.order(customer, product)
        assert (await gateway.settled(customer, order_id))["status"] == "CONFIRMED"
        entry: dict[str, Any] = {}
        async with asyncio.timeout(120):  # the notification service retries before giving up
            while not entry:
                listed = await choreo(choreo_up, "dlq", "list", "--type", "OrderConfirmed")
                entry = next((e for e in listed["entries"] if e["key"] == order_id), {})
                await asyncio.sleep(1.0)
    finally:
        await sink.delete("/_control/fail")

    assert entry["topic"] == "notification.dlq"
    assert entry["original_topic"] == "order.event"
    assert entry["consumer"] == "notification_service"
    assert (entry["attempts"] or 0) > 1
    others = await choreo(choreo_up, "dlq", "list", "--type", "UserDeleted")
    assert all(e["key"] != order_id for e in others["entries"])

    dry = await choreo(choreo_up, "dlq", "replay", "--all", "--dry-run")
    assert dry["dry_run"] is True
    assert any(e.get("id") == entry["id"] for e in dry["entries"])
    await asyncio.sleep(3.0)
    assert await confirmations(gateway, customer.email) == 0

    await choreo(choreo_up, "dlq", "replay", entry["id"])
    async with asyncio.timeout(30):
        while await confirmations(gateway, customer.email) == 0:
            await asyncio.sleep(0.3)
    await choreo(choreo_up, "dlq", "replay", entry["id"])
    await asyncio.sleep(5.0)  # a second e-mail would be out by now
    assert await confirmations(gateway, customer.email) == 1
    await sink.aclose()
