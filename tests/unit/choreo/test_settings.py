"""The settings every service builds on: where its database is, how topics are named, and the
development defaults of secrets refused outside dev."""

from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from choreo import dev_defaults
from choreo.settings import ServiceSettings

SHARED = (
    "CHOREO_ENV",
    "CHOREO_TOPIC_PREFIX",
    "DATABASE_URL",
    "ORDER_DATABASE_URL",
    "GATEWAY_DATABASE_URL",
)


class OrderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDER_")

    service: ClassVar[str] = "order"
    database_name: ClassVar[str | None] = "orders"


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_")

    service: ClassVar[str] = "gateway"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SHARED:
        monkeypatch.delenv(name, raising=False)


def settings() -> OrderSettings:
    return OrderSettings(_env_file=None)  # type: ignore[call-arg]


def test_the_service_database_url_wins_over_the_shared_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDER_DATABASE_URL", "postgresql://order:s3cret@orders-db:5432/shop")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:other@shared-db/postgres")
    assert settings().database_dsn == "postgresql+psycopg://order:s3cret@orders-db:5432/shop"


def test_the_shared_server_is_used_with_the_service_database_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:s3cret@shared-db:5433/postgres")
    assert settings().database_dsn == "postgresql+psycopg://app:s3cret@shared-db:5433/orders"


def test_without_a_database_start_up_fails_naming_both_variables() -> None:
    with pytest.raises(ValidationError) as refused:
        settings()
    assert "set ORDER_DATABASE_URL, or DATABASE_URL to a PostgreSQL server URL" in str(
        refused.value
    )


def test_a_service_without_a_database_needs_none() -> None:
    gateway = GatewaySettings(_env_file=None)  # type: ignore[call-arg]
    assert gateway.database_dsn is None


def test_the_topic_prefix_isolates_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDER_DATABASE_URL", "postgresql://127.0.0.1/orders")
    assert settings().topic("order.event") == "order.event"
    monkeypatch.setenv("CHOREO_TOPIC_PREFIX", "run-7.")
    assert settings().topic("order.event") == "run-7.order.event"


def settings_in(env: str, monkeypatch: pytest.MonkeyPatch) -> OrderSettings:
    monkeypatch.setenv("ORDER_DATABASE_URL", "postgresql://127.0.0.1/orders")
    monkeypatch.setenv("CHOREO_ENV", env)
    return settings()


def refuse_stripe_default(settings: OrderSettings, value: str | None) -> None:
    settings.refuse_dev_default(
        "STRIPE_API_KEY",
        SecretStr(value) if value is not None else None,
        dev_defaults.STRIPE_API_KEY,
        what="key",
        instead="set it to the Stripe account's secret key",
    )


@pytest.mark.parametrize("env", ["dev", "test"])
def test_a_dev_default_is_accepted_in_dev_and_test(
    env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_stripe_default(settings_in(env, monkeypatch), dev_defaults.STRIPE_API_KEY)
    refuse_stripe_default(settings_in(env, monkeypatch), None)


def test_prod_refuses_a_dev_default_naming_the_variable_not_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match="STRIPE_API_KEY") as refused:
        refuse_stripe_default(settings_in("prod", monkeypatch), dev_defaults.STRIPE_API_KEY)
    message = str(refused.value)
    assert "the dev default key is refused outside CHOREO_ENV=dev or test" in message
    assert "set it to the Stripe account's secret key" in message
    assert dev_defaults.STRIPE_API_KEY not in message


@pytest.mark.parametrize("value", [None, ""])
def test_prod_refuses_an_unset_secret_that_would_fall_back_to_the_default(
    value: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="STRIPE_API_KEY is not set"):
        refuse_stripe_default(settings_in("prod", monkeypatch), value)


def test_prod_accepts_a_secret_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_stripe_default(settings_in("prod", monkeypatch), "sk_live_not_a_real_key")


def test_a_default_can_be_refused_in_test_too(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse_admin_default(settings: OrderSettings) -> None:
        settings.refuse_dev_default(
            "CHOREO_ADMIN_PASSWORD",
            SecretStr(dev_defaults.ADMIN_PASSWORD),
            dev_defaults.ADMIN_PASSWORD,
            what="password",
            instead="choose another",
            accepted_in=("dev",),
        )

    refuse_admin_default(settings_in("dev", monkeypatch))
    with pytest.raises(ValueError, match="refused outside CHOREO_ENV=dev;"):
        refuse_admin_default(settings_in("test", monkeypatch))


def test_an_unknown_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="CHOREO_ENV"):
        settings_in("production", monkeypatch)
