"""Alembic versions of the inventory service's database (environment: choreo.migrate)."""
