"""The user service's settings: the only module of the service that reads the environment."""

from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from choreo.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="USER_")

    service: ClassVar[str] = "user"
    database_name: ClassVar[str | None] = "users"

    port: int = 8001
