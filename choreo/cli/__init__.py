"""The `choreo` command: one Typer application, one module per command group."""

from __future__ import annotations

import typer

from choreo.cli import bench, dlq, event_keys, saga, schemas, tail, topics, up, verify
from choreo.cli.usage import UsageGroup

app = typer.Typer(
    cls=UsageGroup,
    name="choreo",
    help="Run, inspect and repair a Choreo system.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(schemas.app, name="schemas")
up.register(app)
topics.register(app)
tail.register(app)
saga.register(app)
app.add_typer(dlq.app, name="dlq")
verify.register(app)
bench.register(app)
event_keys.register(app)


def main() -> None:
    app()
