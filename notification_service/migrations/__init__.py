"""Alembic versions of the notification service's database (environment: choreo.migrate)."""
