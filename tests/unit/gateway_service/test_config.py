"""The gateway's settings: shared service URLs, CORS origins, Redis and keys."""

from __future__ import annotations

import pytest

from gateway_service.config import Settings

SHARED = (
    "USER_SERVICE_URL",
    "ORDER_SERVICE_URL",
    "PAYMENT_SERVICE_URL",
    "INVENTORY_SERVICE_URL",
    "NOTIFICATION_SERVICE_URL",
    "REDIS_URL",
    "JWT_JWKS",
    "JWT_JWKS_URL",
    "GATEWAY_CORS_ORIGINS",
    "GATEWAY_TRUST_FORWARDED",
)


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SHARED:
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_the_local_stack() -> None:
    settings = Settings()
    assert settings.upstream_urls == {
        "user": "http://127.0.0.1:8001",
        "order": "http://127.0.0.1:8002",
        "payment": "http://127.0.0.1:8003",
        "inventory": "http://127.0.0.1:8004",
        "notification": "http://127.0.0.1:8005",
    }
    assert settings.jwks_source_url == "http://127.0.0.1:8001/api/v1/auth/jwks"
    assert settings.redis_url is None
    assert settings.cors_origins == []
    assert not settings.trust_forwarded
    assert not settings.hsts
    assert (settings.rate_limit_per_second, settings.rate_limit_burst) == (20.0, 40)
    assert (settings.breaker_failure_threshold, settings.breaker_cooldown_seconds) == (5, 10.0)
    assert settings.upstream_timeout_seconds == 10.0


def test_service_urls_and_redis_are_shared_unprefixed_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USER_SERVICE_URL", "http://users.internal")
    monkeypatch.setenv("INVENTORY_SERVICE_URL", "http://inventory.internal:9000")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/1")
    settings = Settings()
    assert settings.upstream_urls["user"] == "http://users.internal"
    assert settings.upstream_urls["inventory"] == "http://inventory.internal:9000"
    assert settings.jwks_source_url == "http://users.internal/api/v1/auth/jwks"
    assert settings.redis_url == "redis://cache:6379/1"


def test_an_empty_variable_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "")
    monkeypatch.setenv("JWT_JWKS", "")
    monkeypatch.setenv("JWT_JWKS_URL", "")
    settings = Settings()
    assert settings.redis_url is None
    assert settings.jwks_json is None
    assert settings.jwks_source_url == "http://127.0.0.1:8001/api/v1/auth/jwks"


def test_cors_origins_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CORS_ORIGINS", "https://shop.example, http://localhost:3000,")
    assert Settings().cors_origins == ["https://shop.example", "http://localhost:3000"]


def test_limits_must_make_sense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_RATE_LIMIT_BURST", "0")
    with pytest.raises(ValueError, match="rate_limit_burst"):
        Settings()
