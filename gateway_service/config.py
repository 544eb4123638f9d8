"""The gateway's settings: the only module of the gateway that reads the environment."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from choreo.settings import ServiceSettings


def _service_url(name: str, port: int) -> Any:
    # Shared by the stack (`choreo up` sets every <SERVICE>_SERVICE_URL), so unprefixed.
    return Field(
        default=f"http://127.0.0.1:{port}",
        validation_alias=AliasChoices(f"{name.upper()}_SERVICE_URL"),
    )


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_")

    service: ClassVar[str] = "gateway"
    database_name: ClassVar[str | None] = None

    port: int = 8000

    user_service_url: str = _service_url("user", 8001)
    order_service_url: str = _service_url("order", 8002)
    payment_service_url: str = _service_url("payment", 8003)
    inventory_service_url: str = _service_url("inventory", 8004)
    notification_service_url: str = _service_url("notification", 8005)

    # How long an upstream may take to answer (read) and to accept a connection.
    upstream_timeout_seconds: float = Field(default=10.0, gt=0)
    upstream_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    # Consecutive failures that open an upstream's circuit, and how long it stays open.
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_cooldown_seconds: float = Field(default=10.0, gt=0)

    # Token buckets: one per user (the token's subject) and one per client address.
    rate_limit_per_second: float = Field(default=20.0, gt=0)
    rate_limit_burst: int = Field(default=40, ge=1)
    address_rate_limit_per_second: float = Field(default=20.0, gt=0)
    address_rate_limit_burst: int = Field(default=40, ge=1)
    rate_limit_prefix: str = "choreo:ratelimit:"
    # Shared with the rest of the stack, so unprefixed; set, the limits live in Redis and every
    # replica of the gateway shares them.
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL"))
    # Only behind a proxy that sets X-Forwarded-For itself: otherwise any client could pick the
    # address its requests are counted against.
    trust_forwarded: bool = False

    cors_origins: Annotated[list[str], NoDecode] = []
    hsts: bool = False

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("redis_url", "jwks_url", "jwks_json", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return value or None

    @property
    def upstream_urls(self) -> dict[str, str]:
        """Each upstream service's base URL, by the name the routing table uses."""
        return {
            "user": self.user_service_url,
            "order": self.order_service_url,
            "payment": self.payment_service_url,
            "inventory": self.inventory_service_url,
            "notification": self.notification_service_url,
        }

    @property
    def jwks_source_url(self) -> str:
        """Where the signing keys are: JWT_JWKS_URL, or the user service's JWKS."""
        return self.jwks_url or f"{self.user_service_url.rstrip('/')}/api/v1/auth/jwks"
