"""`choreo up`: placeholder replaced by the stack work in this session."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    del app
