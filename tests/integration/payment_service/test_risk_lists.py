"""The risk screening's allow- and block-lists, through the gateway as an admin keeps them:
added in their compared form, one list per value, paged and filtered, deleted; refused to
customers and to bad input, with nothing written."""

from __future__ import annotations

from typing import Any

import httpx

from choreo.auth import SigningKey
from choreo.testing import StartService
from choreo.testing.records import new_id

LISTS = "/api/v1/admin/risk/lists"


async def entries(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await api.get(
            LISTS, params={**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
        )
        assert page.status_code == 200, page.text
        found += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return found


async def test_an_admin_keeps_the_risk_lists_through_the_gateway(
    start_service: StartService, signing_key: SigningKey
) -> None:
    payment = start_service("payment")
    gateway = start_service("gateway", PAYMENT_SERVICE_URL=payment.url, REDIS_URL="")
    admin_id = new_id()
    admin = {"Authorization": f"Bearer {signing_key.issue(admin_id, roles=['admin'])}"}
    customer = {"Authorization": f"Bearer {signing_key.issue(new_id())}"}
    async with gateway.client() as api:
        api.headers.update(admin)
        added = []
        for body in (
            {"kind": "ip", "value": " 2001:DB8:0:0::1 ", "action": "block", "note": "bots"},
            {"kind": "email", "value": "Trusted@Example.COM", "action": "allow"},
            {"kind": "card_fingerprint", "value": "fp_stolen", "action": "block"},
        ):
            response = await api.post(LISTS, json=body)
            assert response.status_code == 201, response.text
            added.append(response.json())
        # Kept in the form the screening compares.
        assert [(e["kind"], e["value"], e["action"]) for e in added] == [
            ("ip", "2001:db8::1", "block"),
            ("email", "trusted@example.com", "allow"),
            ("card_fingerprint", "fp_stolen", "block"),
        ]
        assert added[0]["note"] == "bots"
        assert added[0]["created_by"] == admin_id

        # One list per value, however it is written: the other list too.
        again = await api.post(
            LISTS, json={"kind": "ip", "value": "2001:db8::1", "action": "allow"}
        )
        assert again.status_code == 409, again.text
        assert again.json()["error"]["code"] == "list_entry_exists"

        assert [e["id"] for e in await entries(api)] == [e["id"] for e in added]
        assert [e["value"] for e in await entries(api, action="block")] == [
            "2001:db8::1",
            "fp_stolen",
        ]
        assert [e["value"] for e in await entries(api, kind="email")] == ["trusted@example.com"]

        # Bad input is a 422 that names the problem, and writes nothing.
        for bad in (
            {"kind": "ip", "value": "203.0.113.300", "action": "block"},
            {"kind": "phone", "value": "+15555550100", "action": "block"},
            {"kind": "email", "value": "x@example.com", "action": "maybe"},
            {"kind": "email", "value": "", "action": "block"},
            {"kind": "email", "value": "x@example.com", "action": "block", "extra": 1},
        ):
            response = await api.post(LISTS, json=bad)
            assert response.status_code == 422, (bad, response.text)
        refused = await api.post(LISTS, json={"kind": "ip", "value": "nope", "action": "block"})
        assert refused.json()["error"]["code"] == "invalid_list_entry"
        assert "no IP address" in refused.json()["error"]["message"]
        assert len(await entries(api)) == 3

        # Customers may neither read nor change the lists.
        for method, path in (
            ("GET", LISTS),
            ("POST", LISTS),
            ("DELETE", f"{LISTS}/{added[0]['id']}"),
        ):
            response = await api.request(
                method,
                path,
                headers=customer,
                json={"kind": "ip", "value": "10.0.0.1", "action": "allow"},
            )
            assert response.status_code == 403, (method, response.text)

        # Deleted once; then unknown, as is an id that is none.
        assert (await api.delete(f"{LISTS}/{added[0]['id']}")).status_code == 204
        for gone in (added[0]["id"], "not-an-id"):
            response = await api.delete(f"{LISTS}/{gone}")
            assert response.status_code == 404, response.text
            assert response.json()["error"]["code"] == "list_entry_not_found"
        assert [e["value"] for e in await entries(api)] == ["trusted@example.com", "fp_stolen"]
        # Off its list, a value may go on the other one.
        moved = await api.post(
            LISTS, json={"kind": "ip", "value": "2001:db8::1", "action": "allow"}
        )
        assert moved.status_code == 201, moved.text
