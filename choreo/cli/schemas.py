"""`choreo schemas ...`: check the Avro event schemas before anything publishes with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from choreo.avro import SCHEMA_DIR, SchemaStore, check_store
from choreo.cli.output import prose
from choreo.records import check_records

app = typer.Typer(
    help="Check the Avro event schemas (schemas/<RecordName>.v<N>.avsc).",
    no_args_is_help=True,
)


def check(
    directory: Annotated[
        Path,
        typer.Option(
            "--dir",
            help="Directory of <RecordName>.v<N>.avsc files (default: the repository's schemas/).",
            file_okay=False,
            show_default=False,
        ),
    ] = SCHEMA_DIR,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object.")
    ] = False,
) -> None:
    """Check that every schema parses and every version can evolve from the ones before it.

    Files are named <RecordName>.v<N>.avsc, with versions 1..N and no gaps. Each version must be
    backward and forward compatible with every earlier one. For the repository's schemas/, the
    typed record classes (choreo.records) must also match each record's latest version, field by
    field. Exits 1 and names each problem when there is any.
    """
    problems = check_store(directory)
    if not problems and directory.resolve() == SCHEMA_DIR.resolve():
        problems = check_records(SchemaStore.from_directory(directory))
    records = {} if problems else _records(directory)
    if as_json:
        result = {
            "directory": str(directory),
            "ok": not problems,
            "records": records,
            "problems": problems,
        }
        typer.echo(json.dumps(result, indent=2))
    else:
        for problem in problems:
            typer.echo(f"problem: {problem}")
        width = max(map(len, records), default=0)
        for record_name, versions in records.items():
            listed = ", ".join(f"v{version}" for version in versions)
            typer.echo(f"{record_name:<{width}}  {listed}  ok")
        if records:
            typer.echo(f"{len(records)} records in {directory}: every schema parses and evolves.")
    if problems:
        count = f"{len(problems)} problem" + ("s" if len(problems) > 1 else "")
        typer.echo(
            f"{count} in the schemas of {directory}; fix them before any service publishes "
            "with these schemas.",
            err=True,
        )
        raise typer.Exit(1)


app.command(help=prose(check.__doc__))(check)


def _records(directory: Path) -> dict[str, list[int]]:
    store = SchemaStore.from_directory(directory)
    return {record_name: store.versions(record_name) for record_name in store.record_names()}
