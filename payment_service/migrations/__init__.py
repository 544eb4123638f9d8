"""Alembic versions of the payment service's database (environment: choreo.migrate)."""
