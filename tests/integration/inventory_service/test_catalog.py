"""The catalog through the inventory service's HTTP API: admin writes, public reads, stock."""

from __future__ import annotations

import json
import uuid
from typing import Any

from choreo.testing import ServiceProcess

from .conftest import about, create_product, product_body, stock_events

PRODUCTS = "/api/v1/products"


async def test_admin_manages_products_and_stock(
    inventory: ServiceProcess, admin_token: str, kafka_bootstrap: str, topics: str
) -> None:
    async with inventory.client(admin_token) as admin, inventory.client() as public:
        created = await admin.post(PRODUCTS, json=product_body(stock=10, low_stock_threshold=3))
        assert created.status_code == 201, created.text
        product = created.json()
        product_id = product["id"]
        assert created.headers["location"] == f"{PRODUCTS}/{product_id}"
        assert product["available"] == 10
        assert (product["reserved"], product["sold"]) == (0, 0)
        assert product["features"] == ["conical burrs", "40 settings"]
        assert product["currency"] == "USD"

        seen = (await public.get(f"{PRODUCTS}/{product_id}")).json()
        assert seen["name"] == "Burr grinder"
        assert seen["available"] == 10
        assert "reserved" not in seen
        assert "sold" not in seen

        patched = await admin.patch(
            f"{PRODUCTS}/{product_id}",
            json={"name": "Burr grinder II", "price": 9900, "image_url": "https://img.test/g.png"},
        )
        assert patched.status_code == 200, patched.text
        seen = (await public.get(f"{PRODUCTS}/{product_id}")).json()
        assert (seen["name"], seen["price"]) == ("Burr grinder II", 9900)
        assert seen["image_url"] == "https://img.test/g.png"
        assert seen["description"] == "Conical burrs, 40 settings."

        restocked = await admin.post(f"{PRODUCTS}/{product_id}/stock", json={"delta": 5})
        assert restocked.status_code == 200, restocked.text
        assert restocked.json()["available"] == 15

        too_many = await admin.post(f"{PRODUCTS}/{product_id}/stock", json={"delta": -16})
        assert too_many.status_code == 409
        assert too_many.json()["error"]["code"] == "insufficient_stock"

        written_off = await admin.post(
            f"{PRODUCTS}/{product_id}/stock", json={"delta": -12, "reason": "water damage"}
        )
        assert written_off.json()["available"] == 3
        assert (await public.get(f"{PRODUCTS}/{product_id}")).json()["available"] == 3

        # Created with 10, +5, -12: each change announced; the last lands on the threshold (3).
        events = about(
            await stock_events(
                kafka_bootstrap,
                topics,
                *[(product_id, "StockLevelChanged")] * 3,
                (product_id, "LowStockDetected"),
            ),
            product_id,
        )
        levels = [e.record.available for e in events if e.type == "StockLevelChanged"]
        assert levels == [10, 15, 3]
        alerts = [e for e in events if e.type == "LowStockDetected"]
        assert len(alerts) == 1
        assert alerts[0].record.product_name == "Burr grinder II"
        assert (alerts[0].record.available, alerts[0].record.threshold) == (3, 3)

        deleted = await admin.delete(f"{PRODUCTS}/{product_id}")
        assert deleted.status_code == 204
        gone = await public.get(f"{PRODUCTS}/{product_id}")
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "product_not_found"
        assert (await admin.delete(f"{PRODUCTS}/{product_id}")).status_code == 404
        assert (
            await admin.post(f"{PRODUCTS}/{product_id}/stock", json={"delta": 1})
        ).status_code == 404
        assert product_id not in [p["id"] for p in (await public.get(PRODUCTS)).json()["items"]]


async def test_catalog_lists_filter_search_and_paginate(
    inventory: ServiceProcess, admin_token: str
) -> None:
    async with inventory.client(admin_token) as admin, inventory.client() as public:
        catalog = [
            ("Espresso machine", "kitchen", 24900, "15-bar pump, steam wand."),
            ("Burr grinder", "kitchen", 8900, "Conical burrs for ESPRESSO and filter."),
            ("Pour-over kettle", "Kitchen", 5900, "Gooseneck, 100% stainless."),
            ("Trail running shoes", "outdoor", 12900, "Grippy outsole."),
            ("Headlamp", "outdoor", 3900, "400 lumens."),
            ("Mechanical keyboard", "electronics", 13900, "Hot-swappable switches."),
            ("USB-C hub", "electronics", 4900, "Seven ports."),
        ]
        ids = {}
        for name, category, price, description in catalog:
            product = await create_product(
                admin, name=name, category=category, price=price, description=description
            )
            ids[name] = product["id"]
        removed = await create_product(admin, name="Discontinued espresso cups")
        assert (await admin.delete(f"{PRODUCTS}/{removed['id']}")).status_code == 204

        async def names(**params: Any) -> set[str]:
            response = await public.get(PRODUCTS, params={"limit": 100, **params})
            assert response.status_code == 200, response.text
            return {p["name"] for p in response.json()["items"]}

        kitchen = {"Espresso machine", "Burr grinder", "Pour-over kettle"}
        assert await names(category="KITCHEN") == kitchen
        assert await names(q="espresso") == {"Espresso machine", "Burr grinder"}
        assert await names(q="100%") == {"Pour-over kettle"}
        assert await names(q="%") == {"Pour-over kettle"}
        assert await names(q="_") == set()
        assert await names(min_price=4900, max_price=8900) == {
            "Burr grinder",
            "Pour-over kettle",
            "USB-C hub",
        }
        assert await names(category="outdoor", max_price=3900) == {"Headlamp"}
        assert await names(category="toys") == set()

        pages, seen, cursor = 0, [], None
        while True:
            params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = (await public.get(PRODUCTS, params=params)).json()
            pages += 1
            assert len(page["items"]) <= 2
            seen += [p["id"] for p in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 4
        assert len(seen) == len(set(seen)) == len(catalog)
        assert set(seen) == set(ids.values())

        lookup = await public.post(
            f"{PRODUCTS}/lookup",
            json={"ids": [ids["Headlamp"], removed["id"], ids["Headlamp"], str(uuid.uuid4())]},
        )
        assert lookup.status_code == 200, lookup.text
        found = lookup.json()
        assert found["items"] == [
            {
                "id": ids["Headlamp"],
                "name": "Headlamp",
                "price": 3900,
                "currency": "USD",
                "available": 10,
            }
        ]
        assert len(found["missing"]) == 2
        assert removed["id"] in found["missing"]


async def test_admin_routes_need_an_admin_and_bad_input_is_refused(
    inventory: ServiceProcess, admin_token: str, user_token: str
) -> None:
    async with (
        inventory.client(admin_token) as admin,
        inventory.client(user_token) as user,
        inventory.client() as anonymous,
        inventory.client("not-a-token") as forged,
    ):
        product = await create_product(admin)
        one = f"{PRODUCTS}/{product['id']}"
        admin_calls = [
            ("POST", PRODUCTS, product_body()),
            ("PATCH", one, {"price": 1}),
            ("DELETE", one, None),
            ("POST", f"{one}/stock", {"delta": 1}),
        ]
        for method, path, body in admin_calls:
            for client, status in ((anonymous, 401), (forged, 401), (user, 403)):
                response = await client.request(method, path, json=body)
                assert response.status_code == status, (method, path, response.text)
                assert response.json()["error"]["code"] in ("unauthenticated", "forbidden")
        assert (await anonymous.get(one)).json()["available"] == 10
        # A bad token on a public read costs only the admin-only fields.
        assert "reserved" not in (await forged.get(one)).json()
        assert (await admin.get(one)).json()["reserved"] == 0

        bad_products = [
            {"price": 0},
            {"price": 12.5},
            {"currency": "usd"},
            {"stock": -1},
            {"name": ""},
            {"name": "nul\x00byte"},
            {"name": "\ud800"},
            {"price": 10**30},
            {"features": "not a list"},
            {"image_url": "not a url"},
            {"low_stock_threshold": -1},
            {"surprise": True},
        ]
        for fields in bad_products:
            # Sent as ASCII JSON: a lone surrogate travels as the escape `\ud800`.
            body = json.dumps(product_body(**fields))
            response = await admin.post(
                PRODUCTS, content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 422, (fields, response.text)
            assert response.json()["error"]["code"] == "validation_error"

        bad_requests = [
            ("PATCH", one, {"stock": 100}),
            ("PATCH", one, {"name": None}),
            ("POST", f"{one}/stock", {"delta": 0}),
            ("POST", f"{one}/stock", {"delta": "5"}),
            ("POST", f"{one}/stock", {"delta": 10**20}),
            ("POST", PRODUCTS, ["not", "an", "object"]),
            ("POST", f"{PRODUCTS}/lookup", {"ids": []}),
            ("POST", f"{PRODUCTS}/lookup", {"ids": [str(uuid.uuid4()) for _ in range(101)]}),
            ("POST", f"{PRODUCTS}/lookup", {"ids": ["nope"]}),
            ("GET", f"{PRODUCTS}/not-a-uuid", None),
            ("GET", f"{PRODUCTS}?limit=0", None),
            ("GET", f"{PRODUCTS}?limit=101", None),
            ("GET", f"{PRODUCTS}?min_price=-1", None),
            ("GET", f"{PRODUCTS}?min_price=10&max_price=5", None),
            ("GET", f"{PRODUCTS}?q=%00", None),
            ("GET", f"{PRODUCTS}?cursor=bm90IGEgY3Vyc29y", None),
        ]
        for method, path, body in bad_requests:
            response = await admin.request(method, path, json=body)
            assert response.status_code == 422, (method, path, response.text)
            assert response.json()["error"]["code"] in ("validation_error", "invalid_cursor")

        unknown = f"{PRODUCTS}/{uuid.uuid4()}"
        for method, path, body in [
            ("GET", unknown, None),
            ("PATCH", unknown, {"price": 5}),
            ("DELETE", unknown, None),
            ("POST", f"{unknown}/stock", {"delta": 1}),
        ]:
            response = await admin.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"] == "product_not_found"

        seen = (await anonymous.get(one)).json()
        assert (seen["price"], seen["available"]) == (8900, 10)
