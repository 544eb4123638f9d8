"""The card vault through the HTTP API, against real PostgreSQL and localstripe: cards are
tokenized at Stripe, listed and deleted per user, and their numbers and CVCs are kept nowhere."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from choreo.auth import SigningKey
from choreo.testing import ServiceProcess, StartService, eventually, query

from .conftest import DECLINED_ON_ATTACH, VISA, Localstripe, add_card, card, new_id

CVC = "739"
MASTERCARD = "5555555555554444"
VISA_DEBIT = "4000056655665556"
LUHN_INVALID = "4242424242424241"
SUBMITTED_NUMBERS = (VISA, MASTERCARD, VISA_DEBIT, DECLINED_ON_ATTACH, LUHN_INVALID)


def leaves(value: Any) -> list[Any]:
    """Every scalar in a JSON document."""
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves(item)]
    return [value]


async def every_value(payment: ServiceProcess) -> list[tuple[str, Any]]:
    """(table, value) for every column of every row of every table of the service's database."""
    tables = await query(
        payment.database_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    )
    values = []
    for (table,) in tables:
        for row in await query(payment.database_url, f'SELECT * FROM "{table}"'):
            values += [(table, value) for value in row]
    return values


async def test_cards_are_tokenized_listed_deleted_and_never_kept(
    start_service: StartService,
    signing_key: SigningKey,
    localstripe: Localstripe,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="choreo.stack")
    # At DEBUG, and with the Stripe SDK asked to print its requests (STRIPE_LOG), the HTTP
    # client and the SDK log each call: still never a card.
    payment = start_service("payment", PAYMENT_LOG_LEVEL="DEBUG", STRIPE_LOG="debug")
    user, stranger_id = new_id(), new_id()
    async with (
        payment.client(signing_key.issue(user)) as client,
        payment.client(signing_key.issue(stranger_id)) as stranger,
    ):
        first = await add_card(client, card(VISA, cvc=CVC))
        assert first == {
            "id": first["id"],
            "brand": "visa",
            "last4": "4242",
            "exp_month": 12,
            "exp_year": 2034,
            "is_default": True,
        }

        # A PaymentMethod and a token the client made with Stripe itself.
        method = await localstripe.client.v1.payment_methods.create_async(
            params={
                "type": "card",
                "card": {"number": MASTERCARD, "exp_month": 3, "exp_year": 2031, "cvc": CVC},
            }
        )
        second = await add_card(client, {"token": method.id})
        assert (second["last4"], second["exp_month"], second["is_default"]) == ("4444", 3, False)
        token = await localstripe.client.v1.tokens.create_async(
            params={
                "card": {"number": VISA_DEBIT, "exp_month": "7", "exp_year": "2032", "cvc": CVC}
            }
        )
        third = await add_card(client, {"token": token.id})
        assert (third["last4"], third["exp_year"], third["is_default"]) == ("5556", 2032, False)

        listed = (await client.get("/api/v1/payment-methods")).json()
        assert listed == {"items": [first, second, third], "next_cursor": None}
        page = (await client.get("/api/v1/payment-methods", params={"limit": 2})).json()
        assert page["items"] == [first, second]
        rest = await client.get(
            "/api/v1/payment-methods", params={"limit": 2, "cursor": page["next_cursor"]}
        )
        assert rest.json() == {"items": [third], "next_cursor": None}
        bad_cursor = await client.get("/api/v1/payment-methods", params={"cursor": "nope"})
        assert (bad_cursor.status_code, bad_cursor.json()["error"]["code"]) == (
            422,
            "invalid_cursor",
        )
        assert (await stranger.get("/api/v1/payment-methods")).json()["items"] == []

        expired = {"card": {"number": VISA, "exp_month": 1, "exp_year": 2021, "cvc": CVC}}
        refusals = [
            (card(LUHN_INVALID, cvc=CVC), 422, "incorrect_number"),
            (expired, 422, "expired_card"),
            (card(DECLINED_ON_ATTACH, cvc=CVC), 402, "card_declined"),
            (card("4242 4242 4242 424x", cvc=CVC), 422, "validation_error"),
            (card(VISA, cvc="73"), 422, "validation_error"),
            ({**card(VISA, cvc=CVC), "token": method.id}, 422, "validation_error"),
            ({}, 422, "validation_error"),
            ({"token": "pm_doesnotexist"}, 422, "invalid_token"),
            ({"token": "sk_test_not_a_card"}, 422, "validation_error"),
        ]
        for body, status, code in refusals:
            response = await client.post("/api/v1/payment-methods", json=body)
            assert (response.status_code, response.json()["error"]["code"]) == (status, code)
            assert not any(number in response.text for number in SUBMITTED_NUMBERS)
            assert CVC not in leaves(response.json())
        assert len((await client.get("/api/v1/payment-methods")).json()["items"]) == 3

        # Deleting: own cards only; the newest remaining card becomes the default.
        path = f"/api/v1/payment-methods/{first['id']}"
        assert (await stranger.delete(path)).status_code == 404
        assert (await client.delete("/api/v1/payment-methods/not-an-id")).status_code == 404
        assert (await client.delete(path)).status_code == 204
        assert (await client.delete(path)).json()["error"]["code"] == "payment_method_not_found"
        remaining = (await client.get("/api/v1/payment-methods")).json()["items"]
        assert [(m["id"], m["is_default"]) for m in remaining] == [
            (second["id"], False),
            (third["id"], True),
        ]
    async with payment.client() as anonymous:
        assert (await anonymous.get("/api/v1/payment-methods")).status_code == 401

    values = await every_value(payment)
    assert {table for table, _ in values} >= {"customers", "payment_methods"}
    for table, value in values:
        text = value.hex() if isinstance(value, bytes) else str(value)
        for number in SUBMITTED_NUMBERS:
            assert number not in text, f"a card number is in table {table}"
            assert number.encode().hex() not in text, f"a card number is in table {table}"
        assert text != CVC, f"the CVC is in table {table}"

    def service_output() -> str:
        lines = [r.getMessage() for r in caplog.records if r.name == "choreo.stack.payment"]
        return "\n".join(lines)

    async def output_captured() -> bool:
        return "/api/v1/payment-methods" in service_output()

    await eventually(output_captured, "the service's log lines are captured")
    output = service_output()
    assert '"level": "DEBUG"' in output
    for number in SUBMITTED_NUMBERS:
        assert number not in output
    assert f'"{CVC}"' not in output
    assert f"'{CVC}'" not in output
