"""The Alembic environment shared by every service (see choreo.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from choreo.migrate import target_metadata

config = context.config
connection = config.attributes.get("connection")

if context.is_offline_mode():
    context.configure(
        url=config.attributes["dsn"],
        target_metadata=target_metadata(config),
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
elif connection is not None:
    context.configure(connection=connection, target_metadata=target_metadata(config))
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(config.attributes["dsn"])
    with engine.connect() as fresh:
        context.configure(connection=fresh, target_metadata=target_metadata(config))
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
