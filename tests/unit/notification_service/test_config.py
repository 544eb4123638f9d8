"""The notification service's settings: SendGrid from the shared environment, safe in prod."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from choreo.stack.sendgrid_sink import SINK_API_KEY
from notification_service.config import Settings

REAL_KEY = "SG.not-a-real-key"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CHOREO_ENV",
        "SENDGRID_HOST",
        "SENDGRID_API_KEY",
        "NOTIFICATION_FROM_EMAIL",
        "NOTIFICATION_SEND_TIMEOUT_SECONDS",
        "NOTIFICATION_CONSUMER_MAX_ATTEMPTS",
        "NOTIFICATION_PASSWORD_RESET_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NOTIFICATION_DATABASE_URL", "postgresql://127.0.0.1/notifications")


def test_defaults_outside_production() -> None:
    settings = Settings()
    assert settings.port == 8005
    assert settings.sendgrid_host == "https://api.sendgrid.com"
    assert settings.sendgrid_key == SINK_API_KEY
    assert settings.from_email == "orders@choreo.local"
    assert settings.send_timeout_seconds == 10
    assert settings.consumer_max_attempts == 8


def test_sendgrid_is_read_from_unprefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENDGRID_HOST", "http://127.0.0.1:8025")
    monkeypatch.setenv("SENDGRID_API_KEY", REAL_KEY)
    monkeypatch.setenv("NOTIFICATION_FROM_EMAIL", "shop@example.com")
    monkeypatch.setenv("NOTIFICATION_SEND_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("NOTIFICATION_CONSUMER_MAX_ATTEMPTS", "5")
    settings = Settings()
    assert settings.sendgrid_host == "http://127.0.0.1:8025"
    assert settings.sendgrid_key == REAL_KEY
    assert REAL_KEY not in repr(settings)
    assert settings.from_email == "shop@example.com"
    assert settings.send_timeout_seconds == 2.5
    assert settings.consumer_max_attempts == 5


def test_production_refuses_to_start_without_a_real_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHOREO_ENV", "prod")
    with pytest.raises(ValidationError, match="SENDGRID_API_KEY"):
        Settings()
    monkeypatch.setenv("SENDGRID_API_KEY", SINK_API_KEY)
    with pytest.raises(ValidationError, match="SENDGRID_API_KEY"):
        Settings()
    monkeypatch.setenv("SENDGRID_API_KEY", REAL_KEY)
    monkeypatch.setenv("NOTIFICATION_PASSWORD_RESET_URL", "https://shop.example/reset?token=")
    assert Settings().sendgrid_key == REAL_KEY


def test_production_refuses_a_reset_link_that_is_not_https(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found by probing choreo up: prod would mail live reset tokens to the dev default's
    # plain-http loopback link.
    monkeypatch.setenv("CHOREO_ENV", "prod")
    monkeypatch.setenv("SENDGRID_API_KEY", REAL_KEY)
    with pytest.raises(ValidationError, match="NOTIFICATION_PASSWORD_RESET_URL"):
        Settings()
    monkeypatch.setenv("NOTIFICATION_PASSWORD_RESET_URL", "http://shop.example/reset?token=")
    with pytest.raises(ValidationError, match="NOTIFICATION_PASSWORD_RESET_URL"):
        Settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("NOTIFICATION_FROM_EMAIL", "not an address"),
        ("NOTIFICATION_SEND_TIMEOUT_SECONDS", "0"),
        ("NOTIFICATION_CONSUMER_MAX_ATTEMPTS", "0"),
    ],
)
def test_nonsense_is_refused(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError):
        Settings()
