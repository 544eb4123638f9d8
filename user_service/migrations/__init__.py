"""Alembic versions of the user service's database (environment: choreo.migrate)."""
