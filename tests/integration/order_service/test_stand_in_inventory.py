"""The stand-in inventory of these tests (conftest's `StandInInventory`) prices lines as the real
inventory service does: the same catalog, asked the same `POST /api/v1/products/lookup`, gives the
same status and the same JSON, field for field and type for type, and the order service's own
client reads the same products from both.

What the order tests ask of it: products in dollars and in euros, an id the catalog never had,
a product deleted from the catalog; with and without the caller's token, which the order
service passes on. The stand-in says 10 of everything are available, so the real products are
stocked with 10.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import httpx

from choreo.auth import SigningKey
from choreo.testing import StartService
from order_service.inventory import LOOKUP_PATH, InventoryClient

from .conftest import StandInInventory

CATALOG = [("Mug", 1250, "USD"), ("Tea", 399, "USD"), ("Kettle", 4000, "EUR")]
DELETED = "Tea"
STAND_IN_AVAILABLE = 10


async def real_catalog(admin: httpx.AsyncClient) -> dict[str, str]:
    """CATALOG in the real inventory service, DELETED deleted; ids by name."""
    ids = {}
    for name, price, currency in CATALOG:
        body = {
            "name": name,
            "category": "kitchen",
            "price": price,
            "currency": currency,
            "stock": STAND_IN_AVAILABLE,
        }
        created = await admin.post("/api/v1/products", json=body)
        assert created.status_code == 201, created.text
        ids[name] = created.json()["id"]
    deleted = await admin.delete(f"/api/v1/products/{ids[DELETED]}")
    assert deleted.status_code == 204, deleted.text
    return ids


def stand_in_catalog(stand_in: StandInInventory) -> dict[str, str]:
    ids = {name: stand_in.add(name, price, currency) for name, price, currency in CATALOG}
    del stand_in.products[ids[DELETED]]
    return ids


def named(value: Any, names: dict[str, str]) -> Any:
    """`value` (JSON) with each id replaced by what it names: both sides' ids are their own."""
    if isinstance(value, dict):
        return {key: named(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [named(item, names) for item in value]
    return names.get(value, value) if isinstance(value, str) else value


async def answers(url: str, ids: dict[str, str], token: str) -> list[Any]:
    """What a lookup of the catalog and an unknown id answers at `url`, with and without
    `token`, raw and as the order service reads it; ids replaced by names."""
    unknown = str(uuid.uuid4())
    names = {product_id: name for name, product_id in ids.items()} | {unknown: "unknown"}
    asked = [*ids.values(), unknown]
    seen: list[Any] = []
    async with httpx.AsyncClient(base_url=url) as client:
        for headers in ({}, {"Authorization": f"Bearer {token}"}):
            response = await client.post(LOOKUP_PATH, json={"ids": asked}, headers=headers)
            seen.append((response.status_code, named(response.json(), names)))
    inventory = InventoryClient(url)
    try:
        products = await inventory.lookup(asked, authorization=f"Bearer {token}")
    finally:
        await inventory.aclose()
    seen.append({names[i]: dataclasses.replace(p, id=names[i]) for i, p in products.items()})
    return seen


async def test_the_stand_in_answers_the_price_lookup_as_the_real_inventory_service_does(
    start_service: StartService, inventory: StandInInventory, signing_key: SigningKey
) -> None:
    real = start_service("inventory")
    admin_token = signing_key.issue(str(uuid.uuid4()), roles=["admin", "user"])
    async with real.client(admin_token) as admin:
        real_ids = await real_catalog(admin)
    customer = signing_key.issue(str(uuid.uuid4()))

    from_real = await answers(real.url, real_ids, customer)
    from_stand_in = await answers(inventory.url, stand_in_catalog(inventory), customer)

    assert from_stand_in == from_real
    status, body = from_real[0]
    assert status == 200
    assert body == {
        "items": [
            {"id": "Mug", "name": "Mug", "price": 1250, "currency": "USD", "available": 10},
            {"id": "Kettle", "name": "Kettle", "price": 4000, "currency": "EUR", "available": 10},
        ],
        "missing": ["Tea", "unknown"],
    }
