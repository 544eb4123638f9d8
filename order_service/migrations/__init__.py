"""Alembic versions of the order service's database (environment: choreo.migrate)."""
