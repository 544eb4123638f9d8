"""The gateway's settings: the only module of the gateway that reads the environment."""

from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from choreo.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_")

    service: ClassVar[str] = "gateway"
    database_name: ClassVar[str | None] = None

    port: int = 8000
