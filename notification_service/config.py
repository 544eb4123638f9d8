"""The notification service's settings: the only module of it that reads the environment."""

from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from choreo.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATION_")

    service: ClassVar[str] = "notification"
    database_name: ClassVar[str | None] = "notifications"

    port: int = 8005
