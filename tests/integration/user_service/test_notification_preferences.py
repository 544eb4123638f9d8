"""Notification preferences and the phone number, through the gateway to the user service on
real PostgreSQL and the broker: the defaults, a change and what it publishes, the refusals
(unknown kind or channel, security notices), and phone numbers stored in E.164."""

from __future__ import annotations

from typing import Any

import httpx

from choreo.events import Event
from choreo.records import NotificationPreference, NotificationPreferencesChanged, Record
from choreo.testing import StartService, collect_events

from .conftest import bearer, login, register

PATH = "/api/v1/users/me/notification-preferences"
ADA_PASSWORD = "Analytical-Engine-1843"
DEFAULT = {"email": True, "sms": False, "in_app": True}
KINDS = ("order_updates", "payment_updates", "account_notices", "low_stock")


def refused(response: httpx.Response, code: str, *words: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    said = error["message"] + " ".join(detail["message"] for detail in error.get("details") or ())
    assert all(word in said for word in words), error


async def test_preferences_default_change_publish_and_refuse(
    start_service: StartService, kafka_bootstrap: str, topics: str
) -> None:
    start_service("user")
    gateway = start_service("gateway", REDIS_URL="")
    async with gateway.client() as api:
        ada = await register(api, "ada@example.com", ADA_PASSWORD, "Ada Lovelace")
        tokens = await login(api, "ada@example.com", ADA_PASSWORD)
        api.headers.update(bearer(tokens["access_token"]))

        assert (await api.get(PATH.replace("/me/", "/me/x"))).status_code == 404
        unsigned = await httpx.AsyncClient(base_url=gateway.url).get(PATH)
        assert unsigned.status_code == 401

        # The defaults: e-mail and in-app, no SMS; security notices by e-mail, always.
        defaults = await api.get(PATH)
        assert defaults.status_code == 200, defaults.text
        assert defaults.json() == {
            "preferences": dict.fromkeys(KINDS, DEFAULT),
            "always_on": {"password_reset": ["email"], "password_changed": ["email"]},
            "changed_at": None,
        }

        # SMS only for order updates: the kinds and channels not named keep their values.
        body = {"preferences": {"order_updates": {"email": False, "sms": True, "in_app": False}}}
        changed = await api.put(PATH, json=body)
        assert changed.status_code == 200, changed.text
        chosen: dict[str, Any] = {
            **dict.fromkeys(KINDS, DEFAULT),
            "order_updates": {"email": False, "sms": True, "in_app": False},
        }
        assert changed.json()["preferences"] == chosen
        assert changed.json()["changed_at"] is not None
        assert (await api.get(PATH)).json() == changed.json()
        # The same again changes nothing (and publishes nothing).
        assert (await api.put(PATH, json=body)).json() == changed.json()

        # Refusals, in the error shape, changing nothing.
        refused(
            await api.put(PATH, json={"preferences": {"password_reset": {"email": False}}}),
            "preference_not_settable",
            "password_reset",
            "cannot be changed",
        )
        refused(
            await api.put(PATH, json={"preferences": {"security": {"sms": True}}}),
            "preference_not_settable",
        )
        refused(
            await api.put(PATH, json={"preferences": {"newsletters": {"email": True}}}),
            "validation_error",
            "newsletters",
        )
        refused(
            await api.put(PATH, json={"preferences": {"order_updates": {"fax": True}}}),
            "validation_error",
            "fax",
        )
        for bad in (
            {"preferences": {"order_updates": {"sms": "yes"}}},
            {"preferences": ["order_updates"]},
            {"order_updates": {"sms": True}},
            {},
        ):
            response = await api.put(PATH, json=bad)
            assert response.status_code == 422, (bad, response.text)
            assert response.json()["error"]["code"] == "validation_error"
        assert (await api.get(PATH)).json() == changed.json()

    # One event, with every kind as it now is.
    def complete(events: list[Event[Record]]) -> bool:
        return any(e.type == "NotificationPreferencesChanged" for e in events)

    events = await collect_events(kafka_bootstrap, f"{topics}user.event", complete)
    [published] = [e for e in events if e.type == "NotificationPreferencesChanged"]
    assert published.subject == ada["id"]
    record = published.record
    assert isinstance(record, NotificationPreferencesChanged)
    assert record.preferences == tuple(
        NotificationPreference(kind=kind, **chosen[kind]) for kind in KINDS
    )


async def test_the_phone_number_is_checked_and_stored_in_e164(
    start_service: StartService, kafka_bootstrap: str, topics: str
) -> None:
    start_service("user")
    gateway = start_service("gateway", REDIS_URL="")
    async with gateway.client() as api:
        ada = await register(api, "ada@example.com", ADA_PASSWORD, "Ada Lovelace")
        tokens = await login(api, "ada@example.com", ADA_PASSWORD)
        api.headers.update(bearer(tokens["access_token"]))

        changed = await api.patch("/api/v1/users/me", json={"phone": "+1 (202) 555-0143"})
        assert changed.status_code == 200, changed.text
        assert changed.json()["phone"] == "+12025550143"
        for phone in ("202 555 0143", "+1 555 010 9999", "call me", "+44 20"):
            response = await api.patch("/api/v1/users/me", json={"phone": phone})
            refused(response, "validation_error", "country code")
        assert (await api.get("/api/v1/users/me")).json()["phone"] == "+12025550143"

    def complete(events: list[Event[Record]]) -> bool:
        return any(e.type == "UserUpdated" for e in events)

    events = await collect_events(kafka_bootstrap, f"{topics}user.event", complete)
    [updated] = [e for e in events if e.type == "UserUpdated"]
    assert (updated.subject, getattr(updated.record, "phone", None)) == (ada["id"], "+12025550143")
