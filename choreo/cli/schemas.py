"""`choreo schemas ...`: placeholder replaced by the schemas work in this session."""

from __future__ import annotations

import typer

app = typer.Typer(help="Check the Avro schemas in schemas/.", no_args_is_help=True)
