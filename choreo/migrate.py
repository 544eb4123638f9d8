"""Alembic for every service: one shared environment, the kit's versions plus the service's own.

Each service database gets the kit's `outbox` and `inbox` tables from the `choreo` branch in
`choreo/kit_migrations/versions`, and its business tables from `<service>/migrations/versions`.
Replicas starting together migrate one at a time (an advisory lock).
"""

from __future__ import annotations

import importlib
import zlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, create_engine, text

from choreo.tables import kit_metadata

KIT_MIGRATIONS = Path(__file__).resolve().parent / "kit_migrations"
_LOCK_KEY = zlib.crc32(b"choreo-migrate")


def service_package(service: str) -> str:
    """`order` or `order_service` -> `order_service`."""
    return service if service.endswith("_service") else f"{service}_service"


def alembic_config(service: str, dsn: str) -> Config:
    package = service_package(service)
    versions = Path(importlib.import_module(f"{package}.migrations").__path__[0]) / "versions"
    tables = importlib.import_module(f"{package}.tables")
    config = Config()
    config.set_main_option("script_location", str(KIT_MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.set_main_option(
        "version_locations", f"{KIT_MIGRATIONS / 'versions'}:{versions}".replace("%", "%%")
    )
    config.attributes["dsn"] = dsn
    config.attributes["target_metadata"] = [kit_metadata, tables.metadata]
    return config


def migrate(service: str, dsn: str, revision: str = "heads") -> None:
    """Bring `service`'s database to `revision` (all heads by default); safe to run twice."""
    config = alembic_config(service, dsn)
    engine = create_engine(dsn, poolclass=None)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
            connection.commit()
            try:
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
                connection.commit()
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
                connection.commit()
    finally:
        engine.dispose()


def target_metadata(config: Config) -> list[MetaData]:
    metadata: list[MetaData] = config.attributes["target_metadata"]
    return metadata
