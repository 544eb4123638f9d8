"""`choreo dlq ...`: list, inspect and replay dead letters, the records a service could not apply
and parked in its `<service>.dlq` topic with the error in `dlq.*` headers (DESIGN.md §3)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from choreo.cli.broker import Broker
from choreo.cli.dead_letters import (
    DeadLetter,
    Filters,
    dead_letter_topics,
    fetch,
    republish,
    scan,
)
from choreo.cli.options import (
    DEFAULT_BOOTSTRAP_SERVERS,
    BootstrapOption,
    EntryId,
    JsonOption,
    PrefixOption,
    parse_duration,
    parse_entry_id,
    parse_record_type,
)
from choreo.cli.output import (
    CliError,
    advance,
    cell,
    console,
    echo_json,
    moment,
    progress,
    prose,
    run,
)
from choreo.cli.records import render

app = typer.Typer(
    help="List, show and replay dead letters: records a service could not apply, parked in "
    "its <service>.dlq topic with the error in dlq.* headers. An entry's id is "
    "<dlq topic>:<partition>:<offset>.",
    no_args_is_help=True,
)

_ERROR_SHOWN = 60
"""Characters of an error a `dlq list` table row shows."""
_TABLE_WIDTH = 190
"""Columns `dlq list` needs for a table; narrower consoles get one block per entry."""

TopicOption = Annotated[
    str | None,
    typer.Option(
        "--topic",
        metavar="T",
        help="Only this dead-letter topic (inventory.dlq, or just inventory).",
    ),
]


def list_entries(
    topic: TopicOption = None,
    since: Annotated[
        timedelta | None,
        typer.Option(
            metavar="DURATION", parser=parse_duration, help="Only failures of the last 10m, 2h, 1d."
        ),
    ] = None,
    record_type: Annotated[
        str | None,
        typer.Option(
            "--type", metavar="RECORD", parser=parse_record_type, help="Only this event type."
        ),
    ] = None,
    error: Annotated[
        str | None,
        typer.Option(
            metavar="SUBSTRING", help="Only entries whose error type or message contains this."
        ),
    ] = None,
    bootstrap_servers: BootstrapOption = DEFAULT_BOOTSTRAP_SERVERS,
    topic_prefix: PrefixOption = "",
    as_json: JsonOption = False,
) -> None:
    """List the dead letters of every *.dlq topic: id, original topic/partition/offset, event
    type, key, error, attempts and when it failed.

    Exit status 0, also when there are none; 1 when the broker cannot be reached.
    """
    filters = Filters(since=since, record_type=record_type, error=error)
    entries = run(_list(bootstrap_servers, topic_prefix, topic, filters))
    rows = [entry.summary() for entry in entries]
    if as_json:
        echo_json({"entries": rows})
        return
    out = console()
    if not rows:
        out.print("no dead letters")
        return
    if out.width >= _TABLE_WIDTH:
        out.print(_entries_table(rows))
        return
    # Narrower than a table of them needs: one block per entry, nothing cut.
    out.print(f"{len(rows)} dead letter(s)")
    for row in rows:
        out.print()
        out.print(
            Text.assemble((row["id"], "bold cyan"), f"  {row['type'] or '?'}  key={row['key']}"),
            soft_wrap=True,
        )
        out.print(
            f"  failed {moment(row['failed_at'])} after {row['attempts']} attempt(s) on "
            f"{_original(row)}",
            soft_wrap=True,
        )
        out.print(
            Text(f"  {row['error_type']}: {row['error_message']}", style="red"), soft_wrap=True
        )


def _entries_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(rows)} dead letter(s)", title_justify="left")
    for column in ("id", "failed at", "original", "type", "key", "attempts"):
        table.add_column(column, no_wrap=True)
    table.add_column("error", overflow="fold")
    for row in rows:
        error_text = f"{row['error_type']}: {row['error_message']}"
        if len(error_text) > _ERROR_SHOWN:
            # The whole message is in `dlq show` and --json.
            error_text = error_text[: _ERROR_SHOWN - 1] + "…"
        table.add_row(
            row["id"],
            moment(row["failed_at"]),
            _original(row),
            row["type"] or "?",
            row["key"] or "∅",
            str(row["attempts"] or "-"),
            Text(error_text, style="red"),
        )
    return table


def _original(row: dict[str, Any]) -> str:
    return f"{row['original_topic']}[{row['original_partition']}]@{row['original_offset']}"


def show(
    entry_id: Annotated[str, typer.Argument(metavar="ID", help="<dlq topic>:<partition>:<offset>")],
    bootstrap_servers: BootstrapOption = DEFAULT_BOOTSTRAP_SERVERS,
    topic_prefix: PrefixOption = "",
    as_json: JsonOption = False,
) -> None:
    """Show one dead letter: every header and the decoded value (raw when it does not decode).

    Exit status 1 when there is no such entry.
    """
    wanted = parse_entry_id(entry_id, topic_prefix)
    (entry,) = run(_fetch(bootstrap_servers, topic_prefix, [wanted]))
    if as_json:
        echo_json({**entry.summary(), **entry.record.to_json(), "id": entry.id})
        return
    out = console()
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    for name, value in entry.summary().items():
        facts.add_row(name, cell(value))
    out.print(facts)
    out.print()
    out.print(render(entry.record), soft_wrap=True)


def replay(
    entry_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="ID", help="Entries to replay, as `dlq list` prints them."),
    ] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Replay every entry (of --topic, if given).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only say what would be replayed; send nothing.")
    ] = False,
    topic: TopicOption = None,
    bootstrap_servers: BootstrapOption = DEFAULT_BOOTSTRAP_SERVERS,
    topic_prefix: PrefixOption = "",
    as_json: JsonOption = False,
) -> None:
    """Republish dead letters to the topic they failed on, for their consumers to try again.

    Each entry's original record goes back to its dlq.original.topic: the same key and value,
    its original headers without the dlq.* ones, plus dlq.replayed.from (the entry id) and
    dlq.replayed.at. Replaying is idempotent: a consumer skips an event (same ce_id) it has
    already applied, so replaying an entry twice never applies it twice (and never sends a
    second e-mail). The dead-letter topic itself is left as it is. Every id is checked before
    anything is sent; exit status 1 names an unknown one.
    """
    if bool(entry_ids) == replay_all:
        raise typer.BadParameter("give entry ids or --all (one of the two)", param_hint="ID")
    if topic is not None and not replay_all:
        raise typer.BadParameter("--topic goes with --all", param_hint="--topic")
    # Each entry once, however often it is named.
    wanted = list(dict.fromkeys(parse_entry_id(text, topic_prefix) for text in entry_ids or []))
    results = run(_replay(bootstrap_servers, topic_prefix, wanted, topic, dry_run=dry_run))
    if as_json:
        echo_json({"dry_run": dry_run, "entries": results})
        return
    out = console()
    if not results:
        out.print("no dead letters to replay")
        return
    verb = "would replay" if dry_run else "replayed"
    table = Table(title=f"{verb} {len(results)} dead letter(s)", title_justify="left")
    for column in ("id", "type", "key", "to"):
        table.add_column(column, overflow="fold")
    for result in results:
        to = result["to_topic"]
        if not dry_run:
            to = f"{to}[{result['partition']}]@{result['offset']}"
        table.add_row(result["id"], result["type"] or "?", result["key"] or "∅", to)
    out.print(table)
    if dry_run:
        out.print("dry run: nothing was sent")


app.command("list", help=prose(list_entries.__doc__))(list_entries)
app.command(help=prose(show.__doc__))(show)
app.command(help=prose(replay.__doc__))(replay)


async def _list(
    bootstrap_servers: str, prefix: str, topic: str | None, filters: Filters
) -> list[DeadLetter]:
    async with Broker(bootstrap_servers, prefix) as broker:
        entries = await scan(broker, dead_letter_topics(broker, topic), show_progress=True)
    now = datetime.now(UTC)
    return [entry for entry in entries if filters.matches(entry, now)]


async def _fetch(
    bootstrap_servers: str, prefix: str, wanted: Sequence[EntryId]
) -> list[DeadLetter]:
    async with Broker(bootstrap_servers, prefix) as broker:
        return await fetch(broker, wanted)


async def _replay(
    bootstrap_servers: str,
    prefix: str,
    wanted: Sequence[EntryId],
    topic: str | None,
    *,
    dry_run: bool,
) -> list[dict[str, Any]]:
    async with Broker(bootstrap_servers, prefix) as broker:
        if wanted:
            entries = await fetch(broker, wanted)
        else:
            entries = await scan(broker, dead_letter_topics(broker, topic), show_progress=True)
        for entry in entries:
            if entry.original_topic is None:
                raise CliError(f"{entry.id} has no dlq.original.topic header: nowhere to replay it")
            broker.require_topic(entry.original_topic)
        plans: list[dict[str, Any]] = [
            {
                "id": entry.id,
                "type": entry.record.type,
                "key": entry.record.key,
                "event_id": entry.record.header("ce_id"),
                "to_topic": entry.original_topic,
            }
            for entry in entries
        ]
        if dry_run or not entries:
            return plans
        with progress("replaying", len(entries)) as bar:
            landed = republish(broker, entries)
            for plan, (partition, offset) in zip(plans, [x async for x in landed], strict=True):
                plan.update(partition=partition, offset=offset)
                advance(bar)
    return plans
