"""A customer's whole journey through the gateway alone (on `choreo up`, and on docker-compose
in tests/containers)."""

from __future__ import annotations

import asyncio

from .journey import Gateway, System, subject_of


async def test_register_login_add_a_card_order_and_get_confirmed(system: System) -> None:
    gateway = Gateway(system)
    product = await gateway.product(stock=10, price=2500)
    customer = await gateway.register()

    order_id = await gateway.order(customer, product, quantity=2)
    order = await gateway.settled(customer, order_id)
    assert (order["status"], order["total"]) == ("CONFIRMED", 5000)

    async with asyncio.timeout(30):
        while True:
            subjects = [subject_of(m) for m in await gateway.emails_to(customer.email)]
            welcome = [s for s in subjects if "welcome" in s]
            confirmed = [s for s in subjects if "confirmed" in s]
            if welcome and confirmed:
                break
            await asyncio.sleep(0.3)
    await asyncio.sleep(1.0)  # a duplicate would arrive by now
    subjects = [subject_of(m) for m in await gateway.emails_to(customer.email)]
    assert len([s for s in subjects if "welcome" in s]) == 1
    assert len([s for s in subjects if "confirmed" in s]) == 1

    async with gateway.client(customer.token) as client:
        response = await client.get("/notifications")
    assert response.status_code == 200, response.text
    kinds = {item["kind"] for item in response.json()["items"]}
    assert {"welcome", "order_confirmed"} <= kinds
