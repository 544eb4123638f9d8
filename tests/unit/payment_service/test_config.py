"""The payment service's settings: Stripe from the shared environment, safe in production."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from payment_service.config import Settings

LIVE_KEY = "sk_live_not_a_real_key"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CHOREO_ENV",
        "STRIPE_API_BASE",
        "STRIPE_API_KEY",
        "STRIPE_LOG",
        "PAYMENT_FAULT_KILL_AFTER_CONFIRM",
        "PAYMENT_FAULT_DELAY_AFTER_CONFIRM_SECONDS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PAYMENT_DATABASE_URL", "postgresql://127.0.0.1/payments")


def test_stripe_is_read_from_unprefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_API_BASE", "http://127.0.0.1:8420")
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_elsewhere")
    settings = Settings()
    assert settings.stripe_api_base == "http://127.0.0.1:8420"
    assert settings.stripe_secret_key == "sk_test_elsewhere"
    assert "sk_test_elsewhere" not in repr(settings)


def test_outside_production_the_emulator_key_is_the_default() -> None:
    settings = Settings()
    assert settings.stripe_api_base == "https://api.stripe.com"
    assert settings.stripe_secret_key.startswith("sk_test_")
    assert not settings.fault_kill_after_create
    assert not settings.fault_kill_after_confirm
    assert settings.fault_delay_after_confirm_seconds == 0


def test_production_refuses_to_start_without_a_stripe_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHOREO_ENV", "prod")
    with pytest.raises(ValidationError, match="STRIPE_API_KEY"):
        Settings()
    monkeypatch.setenv("STRIPE_API_KEY", LIVE_KEY)
    assert Settings().stripe_secret_key == LIVE_KEY


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PAYMENT_FAULT_KILL_AFTER_CREATE", "true"),
        ("PAYMENT_FAULT_KILL_AFTER_CONFIRM", "true"),
        ("PAYMENT_FAULT_DELAY_AFTER_CONFIRM_SECONDS", "2"),
    ],
)
def test_production_refuses_fault_injection(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", LIVE_KEY)
    monkeypatch.setenv(variable, value)
    assert Settings()  # accepted in dev and test
    monkeypatch.setenv("CHOREO_ENV", "prod")
    with pytest.raises(ValidationError, match="refused when CHOREO_ENV=prod"):
        Settings()


def test_the_risk_policy_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().risk_policy.card_review_attempt == 6  # the documented defaults
    monkeypatch.setenv("PAYMENT_RISK_CARD_REVIEW_ATTEMPT", "3")
    monkeypatch.setenv("PAYMENT_RISK_ADDRESS_WINDOW_SECONDS", "120")
    policy = Settings().risk_policy
    assert (policy.card_review_attempt, policy.address_window.total_seconds()) == (3, 120)


@pytest.mark.parametrize(
    ("variables", "said"),
    [
        (
            {"PAYMENT_RISK_REVIEW_SCORE": "80", "PAYMENT_RISK_DECLINE_SCORE": "75"},
            "the review score (80) must not be above the decline score (75)",
        ),
        (
            {"PAYMENT_RISK_CARD_REVIEW_ATTEMPT": "12"},
            "card_review_attempt (12) must not be above card_decline_attempt (11)",
        ),
    ],
)
def test_a_risk_policy_that_cannot_hold_anything_stops_the_service_at_start_up(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], said: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=re.escape(said)):
        Settings()
