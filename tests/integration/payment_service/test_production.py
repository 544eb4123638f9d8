"""The payment service as production runs it (CHOREO_ENV=prod): cards arrive as the
PaymentMethod id the client got from Stripe, never as numbers, and its operational endpoints
answer the ops token's holders only."""

from __future__ import annotations

import json

import pytest

from choreo.auth import SigningKey
from choreo.service import ConfigurationError
from choreo.testing import StartService, event_key_environment, query
from payment_service.config import Settings
from payment_service.main import build

from .conftest import VISA, Localstripe, add_card, card, new_id

OPS_TOKEN = "ops-token-of-the-payment-tests-0123456789"
# Not the emulator's default key (production refuses that); localstripe takes any `sk_` key.
LIVE_LIKE_KEY = "sk_live_choreo_production_test"


async def test_production_takes_a_stripe_payment_method_and_refuses_card_numbers(
    start_service: StartService, signing_key: SigningKey, localstripe: Localstripe
) -> None:
    payment = start_service(
        "payment",
        CHOREO_ENV="prod",
        STRIPE_API_KEY=LIVE_LIKE_KEY,
        CHOREO_OPS_TOKEN=OPS_TOKEN,
    )
    async with payment.client(signing_key.issue(new_id())) as client:
        refused = await client.post("/api/v1/payment-methods", json=card(VISA))
        # Stripe's test PaymentMethod, and one the client created with Stripe itself.
        test_method = await add_card(client, {"token": "pm_card_visa"})
        created = await localstripe.client.v1.payment_methods.create_async(
            params={
                "type": "card",
                "card": {
                    "number": "5555555555554444",
                    "exp_month": 3,
                    "exp_year": 2031,
                    "cvc": "739",
                },
            }
        )
        tokenized = await add_card(client, {"token": created.id})

    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "card_numbers_refused"
    assert '{"token": "pm_..."}' in error["message"]
    assert VISA not in refused.text
    assert (test_method["last4"], test_method["is_default"]) == ("4242", True)
    assert (tokenized["last4"], tokenized["is_default"]) == ("4444", False)
    # The refused card went nowhere: its number never reached Stripe, so only two were saved.
    assert len(await query(payment.database_url, "SELECT id FROM payment_methods")) == 2


async def test_production_serves_metrics_and_its_api_document_to_the_ops_token_only(
    start_service: StartService,
) -> None:
    payment = start_service(
        "payment",
        CHOREO_ENV="prod",
        STRIPE_API_KEY=LIVE_LIKE_KEY,
        CHOREO_OPS_TOKEN=OPS_TOKEN,
    )
    operator = {"Authorization": f"Bearer {OPS_TOKEN}"}
    async with payment.client() as anyone:
        refused = [await anyone.get(path) for path in ("/metrics", "/openapi.json")]
        pages = [await anyone.get(path) for path in ("/docs", "/redoc")]
        metrics = await anyone.get("/metrics", headers=operator)
        document = await anyone.get("/openapi.json", headers=operator)

    assert [response.status_code for response in refused] == [401, 401]
    assert [page.status_code for page in pages] == [404, 404]
    assert metrics.status_code == 200
    assert "http_requests_total" in metrics.text
    assert document.status_code == 200
    # The API's own description sends clients to the token path.
    operation = document.json()["paths"]["/api/v1/payment-methods"]["post"]
    assert '{"token": "pm_..."}' in operation["description"]
    schema = document.json()["components"]["schemas"]["PaymentMethodIn"]
    assert "pm_" in schema["properties"]["token"]["description"]
    assert "card_numbers_refused" in schema["properties"]["card"]["description"]
    assert schema["examples"] == [{"token": "pm_card_visa"}]


def test_production_refuses_to_start_without_an_ops_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHOREO_ENV", "prod")
    monkeypatch.setenv("STRIPE_API_KEY", LIVE_LIKE_KEY)
    monkeypatch.setenv("PAYMENT_DATABASE_URL", "postgresql://127.0.0.1:1/payments")
    for token in (None, "", "too-short-to-be-a-secret"):
        if token is None:
            monkeypatch.delenv("CHOREO_OPS_TOKEN", raising=False)
        else:
            monkeypatch.setenv("CHOREO_OPS_TOKEN", token)
        with pytest.raises(ConfigurationError, match="CHOREO_OPS_TOKEN"):
            build(Settings())
    monkeypatch.setenv("CHOREO_OPS_TOKEN", OPS_TOKEN)
    for name, value in event_key_environment().items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match="JWT_JWKS_URL"):
        build(Settings())  # and, in prod, the keys it verifies callers with
    monkeypatch.setenv("JWT_JWKS", json.dumps(SigningKey.generate().jwks()))
    assert build(Settings()).ops_token == OPS_TOKEN
