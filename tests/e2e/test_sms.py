"""SMS through the whole stack (`choreo up`, the gateway alone): a customer who chose SMS only
for order updates gets one SMS and no e-mail for a confirmed order; an SMS the Twilio sink
refuses is dead-lettered, and `choreo dlq replay`, run twice, sends it exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg

from .conftest import ChoreoUp
from .journey import Customer, Gateway, subject_of

PHONE = "+44 20 7946 0958"  # a number of Ofcom's drama range: valid, never anyone's
PHONE_E164 = "+442079460958"
SMS_ONLY = {"order_updates": {"email": False, "sms": True, "in_app": False}}


async def texts_about(sink: httpx.AsyncClient, order_id: str) -> list[str]:
    """The SMS the sink holds for the customer's number that name the order."""
    response = await sink.get("/messages", params={"to": PHONE_E164})
    assert response.status_code == 200, response.text
    reference = "#" + order_id.replace("-", "")[:8].upper()  # how messages name an order
    return [m["body"] for m in response.json() if reference in m["body"]]


async def sms_only(gateway: Gateway, system: ChoreoUp) -> Customer:
    """A customer with a phone who chose SMS only for order updates, once the notification
    service has their choice (it learns it from user.event)."""
    customer = await gateway.register()
    async with gateway.client(customer.token) as client:
        profile = await client.patch("/users/me", json={"phone": PHONE})
        assert profile.status_code == 200, profile.text
        assert profile.json()["phone"] == PHONE_E164
        chosen = await client.put(
            "/users/me/notification-preferences", json={"preferences": SMS_ONLY}
        )
        assert chosen.status_code == 200, chosen.text
    async with asyncio.timeout(30):
        while not await _replica_has_choice(system, customer.user_id):
            await asyncio.sleep(0.2)
    return customer


async def _replica_has_choice(system: ChoreoUp, user_id: str) -> bool:
    async with await psycopg.AsyncConnection.connect(
        system.database_url("notifications")
    ) as connection:
        cursor = await connection.execute(
            "SELECT channels FROM preferences WHERE user_id = %s", (user_id,)
        )
        row = await cursor.fetchone()
    channels: Any = row[0] if row else {}
    return bool(channels.get("order_updates", {}).get("sms"))


async def test_an_sms_only_customer_is_texted_once_and_a_refused_sms_is_replayed_once(
    system: ChoreoUp,
) -> None:
    gateway = Gateway(system)
    sms_sink = httpx.AsyncClient(base_url=system.url("twilio"))
    product = await gateway.product()
    customer = await sms_only(gateway, system)

    order_id = await gateway.order(customer, product)
    assert (await gateway.settled(customer, order_id))["status"] == "CONFIRMED"
    async with asyncio.timeout(30):
        while not any(
            t.startswith("Choreo: your order") and "is confirmed" in t
            for t in await texts_about(sms_sink, order_id)
        ):
            await asyncio.sleep(0.3)
    await asyncio.sleep(3.0)  # a second SMS, or an e-mail, would be out by now
    confirmed_texts = [
        t
        for t in await texts_about(sms_sink, order_id)
        if t.startswith("Choreo: your order") and "is confirmed" in t
    ]
    assert len(confirmed_texts) == 1
    emails = [subject_of(m) for m in await gateway.emails_to(customer.email)]
    assert not any("confirmed" in subject for subject in emails), emails

    # The sink refuses every SMS (400: can never pass): the next confirmation is dead-lettered.
    await sms_sink.post("/_control/fail", json={"status": 400})
    try:
        second = await gateway.order(customer, product)
        assert (await gateway.settled(customer, second))["status"] == "CONFIRMED"
        entry: dict[str, Any] = {}
        async with asyncio.timeout(60):
            while not entry:
                listed = await system.cli("dlq", "list", "--type", "OrderConfirmed")
                entry = next((e for e in listed["entries"] if e["key"] == second), {})
                await asyncio.sleep(1.0)
    finally:
        await sms_sink.delete("/_control/fail")
    assert entry["error_type"] == "SmsRefusedError"
    assert await texts_about(sms_sink, second) == []

    await system.cli("dlq", "replay", entry["id"])
    async with asyncio.timeout(30):
        while not await texts_about(sms_sink, second):
            await asyncio.sleep(0.3)
    await system.cli("dlq", "replay", entry["id"])
    await asyncio.sleep(5.0)  # a second SMS would be out by now
    assert (
        len(
            [
                t
                for t in await texts_about(sms_sink, second)
                if t.startswith("Choreo: your order") and "is confirmed" in t
            ]
        )
        == 1
    )
    assert not any("confirmed" in subject_of(m) for m in await gateway.emails_to(customer.email))
    await sms_sink.aclose()
