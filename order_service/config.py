"""The order service's settings: the only module of the service that reads the environment."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from choreo.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDER_")

    service: ClassVar[str] = "order"
    database_name: ClassVar[str | None] = "orders"

    port: int = 8002
    # An order not CONFIRMED this long after it was placed is cancelled (TIMEOUT).
    saga_timeout_seconds: float = Field(default=60.0, gt=0)
    # How long a customer has to authenticate a payment (3-D Secure) once the card asked for
    # it: the order's deadline moves to then, unless it is later already. A challenge takes a
    # minute or two; an abandoned one ends TIMEOUT, its stock released.
    payment_action_timeout_seconds: float = Field(default=600.0, gt=0)
    sweep_interval_seconds: float = Field(default=1.0, gt=0)
    sweep_batch_size: int = Field(default=100, ge=1)
    # Shared by the stack (`choreo up` sets every <SERVICE>_SERVICE_URL), so unprefixed.
    inventory_service_url: str = Field(
        default="http://127.0.0.1:8004",
        validation_alias=AliasChoices("INVENTORY_SERVICE_URL"),
    )
