"""The user service's own tables (the kit's outbox and inbox come from choreo)."""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData()
