"""The user service's settings: a signing key is required in production, and the seeded admin's
password is refused outside dev when it is the default or short, without being repeated."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from user_service.config import Settings

STRONG = "a-long-admin-passphrase"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CHOREO_ENV",
        "CHOREO_ADMIN_EMAIL",
        "CHOREO_ADMIN_PASSWORD",
        "USER_JWT_PRIVATE_KEY",
        "USER_JWT_KEY_ID",
        "USER_JWT_KEY_FILE",
        "USER_ACCESS_TOKEN_TTL_SECONDS",
        "USER_REFRESH_TOKEN_TTL_SECONDS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("USER_DATABASE_URL", "postgresql://127.0.0.1/users")


def test_defaults() -> None:
    settings = Settings()
    assert settings.port == 8001
    assert settings.access_token_ttl_seconds == 900
    assert settings.refresh_token_ttl_seconds == 30 * 24 * 3600
    assert settings.admin_email is None
    assert settings.admin_password is None
    assert settings.credential_attempts_per_account == 5
    assert settings.credential_attempts_per_address == 10
    assert settings.credential_attempts_window_seconds == 60
    assert settings.password_hashing_concurrency == 0  # one per CPU
    assert settings.password_hashing_queue == 16


def test_production_refuses_to_start_without_a_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHOREO_ENV", "prod")
    with pytest.raises(ValidationError, match="USER_JWT_PRIVATE_KEY"):
        Settings()
    monkeypatch.setenv("USER_JWT_PRIVATE_KEY", "")  # empty is not a key
    with pytest.raises(ValidationError, match="USER_JWT_KEY_FILE"):
        Settings()
    monkeypatch.setenv("USER_JWT_KEY_FILE", "/etc/choreo/jwt.pem")
    assert str(Settings().jwt_key_file) == "/etc/choreo/jwt.pem"


def test_the_admin_address_is_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHOREO_ADMIN_EMAIL", " Root@Example.COM ")
    monkeypatch.setenv("CHOREO_ADMIN_PASSWORD", "choreo-admin")
    settings = Settings()
    assert settings.admin_email == "root@example.com"
    assert settings.admin_password is not None
    assert "choreo-admin" not in repr(settings)
    monkeypatch.setenv("CHOREO_ADMIN_EMAIL", "root")
    with pytest.raises(ValidationError, match="CHOREO_ADMIN_EMAIL is refused"):
        Settings()


def test_admin_credentials_come_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHOREO_ADMIN_EMAIL", "root@example.com")
    with pytest.raises(ValidationError, match="both"):
        Settings()


@pytest.mark.parametrize(
    ("password", "reason"),
    [("choreo-admin", "dev default"), ("short-pass1", "at least 12"), ("2short", "8 to 128")],
)
@pytest.mark.parametrize("env", ["test", "prod"])
def test_outside_dev_a_default_or_short_admin_password_is_refused_unrepeated(
    monkeypatch: pytest.MonkeyPatch, env: str, password: str, reason: str
) -> None:
    monkeypatch.setenv("USER_JWT_KEY_FILE", "/etc/choreo/jwt.pem")
    monkeypatch.setenv("CHOREO_ADMIN_EMAIL", "root@example.com")
    monkeypatch.setenv("CHOREO_ADMIN_PASSWORD", password)
    monkeypatch.setenv("CHOREO_ENV", "dev")
    if reason != "8 to 128":
        assert Settings().admin_password is not None
    monkeypatch.setenv("CHOREO_ENV", env)
    with pytest.raises(ValidationError, match=reason) as refused:
        Settings()
    assert password not in str(refused.value)
    monkeypatch.setenv("CHOREO_ADMIN_PASSWORD", STRONG)
    assert Settings().admin_password is not None
