"""How the inspection commands talk to people and to scripts: consoles, JSON, progress bars,
and the command boundary where every failure becomes one line on stderr and an exit code."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import sys
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

import typer
from aiokafka.errors import KafkaError
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

T = TypeVar("T")

EXIT_FAILURE = 1
"""A failure, or nothing found where something was asked for (an order, a dead letter)."""
EXIT_USAGE = 2
"""A usage error: an unknown option, a value that does not parse, options that conflict."""
EXIT_INTERRUPTED = 130
"""Ctrl-C during work that was not finished (the shell's convention for SIGINT)."""


class CliError(Exception):
    """A failure the user can act on: its message is printed as is, as one line."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def console() -> Console:
    """The console for people (stdout). Piped output keeps whole lines (200 columns) instead
    of 80, unless COLUMNS says how wide to be."""
    out = Console(highlight=False)
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out = Console(highlight=False, width=200)
    return out


def error_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def prose(docstring: str | None) -> str:
    """A command's docstring as its --help text: paragraphs kept, lines within them joined
    (Typer's rich help would otherwise keep the source's line breaks)."""
    paragraphs = inspect.cleandoc(docstring or "").split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


def json_default(value: Any) -> Any:
    """Decoded Avro and database values as JSON: ids and times become strings."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def moment(value: datetime | None) -> str:
    """A time for people: RFC 3339 in UTC to the millisecond (`2026-05-04T12:00:00.000Z`)."""
    if value is None:
        return "-"
    if value.tzinfo is None:
        return value.isoformat(timespec="milliseconds")
    utc = value.astimezone(UTC).isoformat(timespec="milliseconds")
    return utc.replace("+00:00", "Z")


def cell(value: object) -> str:
    """A value in a table for people: times as `moment()` says, nothing as `-`."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return moment(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def fits(out: Console, renderable: RenderableType) -> bool:
    """Whether `renderable` fits `out`'s width without wrapping any cell."""
    unbounded = out.options.update_width(1_000_000)
    return Measurement.get(out, unbounded, renderable).maximum <= out.width


def dumps(document: Any, *, indent: int | None = None) -> str:
    return json.dumps(document, default=json_default, ensure_ascii=False, indent=indent)


def echo_json(document: Any, *, lines: bool = False) -> None:
    """One JSON document (indented), or one compact line of a JSON-lines stream."""
    typer.echo(dumps(document, indent=None if lines else 2))


@contextmanager
def progress(description: str, total: int, *, enabled: bool = True) -> Iterator[Progress]:
    """A progress bar on stderr while long work runs; nothing when stderr is not a terminal."""
    errors = error_console()
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
        disable=not (enabled and errors.is_terminal),
    )
    with bar:
        bar.add_task(description, total=total)
        yield bar


def advance(bar: Progress, steps: int = 1) -> None:
    """Advance the only task of a bar made by `progress()`."""
    bar.advance(bar.task_ids[0], steps)


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; turn every failure into one line on stderr and an exit code."""
    # aiokafka logs each failed connection attempt; the command says what failed, once.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(work)
    except CliError as error:
        fail(str(error), error.exit_code)
    except KafkaError as error:
        fail(f"broker error: {type(error).__name__}: {error}")
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        # The reader of our output went away (`| head`): stop quietly, with Rich's status 1
        # (what its consoles exit with in the same case), as Python's documentation advises.
        _silence_stdout()
        raise typer.Exit(EXIT_FAILURE) from None
    except Exception as error:
        fail(f"unexpected {type(error).__name__}: {error}")


def fail(message: str, exit_code: int = EXIT_FAILURE) -> NoReturn:
    """Print `error: message` on stderr and end the command with `exit_code`."""
    first_line = message.strip().splitlines()[0] if message.strip() else "failed"
    error_console().print(Text(f"error: {first_line}", style="red"), soft_wrap=True)
    raise typer.Exit(exit_code)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
