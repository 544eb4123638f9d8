"""`choreo dlq ...`: list, inspect and replay dead letters, the records a service could not apply
and parked in its `<service>.dlq` topic with the error in `dlq.*` headers (DESIGN.md §3)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    expected_outcomes,
    fetch,
    replays,
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
from choreo.stack.config import StackConfig, resolve_endpoints

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
        typer.Argument(metavar="ID", help="Entries to replay, as `choreo dlq list` prints them."),
    ] = None,
    replay_all: Annotated[
        bool,
        typer.Option("--all", help="Replay every entry (of --topic, if given) not replayed yet."),
    ] = False,
    include_replayed: Annotated[
        bool,
        typer.Option(
            "--include-replayed", help="With --all, also replay entries that were replayed before."
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Say what each replay would do (apply, skip, fail); send nothing."
        ),
    ] = False,
    topic: TopicOption = None,
    bootstrap_servers: BootstrapOption = DEFAULT_BOOTSTRAP_SERVERS,
    topic_prefix: PrefixOption = "",
    as_json: JsonOption = False,
) -> None:
    """Replay dead letters to the consumer that failed them, and to no other.

    Each entry's original record (same key, value and headers, without the dlq.* ones) goes to
    the <service>.retry topic of its dead-letter topic, which only that service reads, through
    the same handlers as the topic it first failed on. The record carries where it first failed
    (dlq.original.*), its attempts so far (dlq.attempts), the entry it replays
    (dlq.replayed.from) and when (dlq.replayed.at). A replay that fails again becomes one new
    entry of that service, its attempts added up; one that the consumer's inbox already holds
    (same ce_id) is skipped, so replaying an entry twice never applies it twice and never
    sends a second e-mail or SMS.

    --all skips entries replayed before (see --include-replayed); named entries are replayed
    as asked. The "expect" column says what the consumer would do: apply, skip (already
    applied), or fail (the record does not decode), from its database's inbox. Every id is
    checked before anything is sent; exit status 1 names an unknown one.
    """
    if bool(entry_ids) == replay_all:
        raise typer.BadParameter("give entry ids or --all (one of the two)", param_hint="ID")
    if topic is not None and not replay_all:
        raise typer.BadParameter("--topic goes with --all", param_hint="--topic")
    if include_replayed and not replay_all:
        raise typer.BadParameter("--include-replayed goes with --all", param_hint="--all")
    # Each entry once, however often it is named.
    wanted = list(dict.fromkeys(parse_entry_id(text, topic_prefix) for text in entry_ids or []))
    endpoints = resolve_endpoints(StackConfig(environment=dict(os.environ)))
    plan = ReplayPlan(topic=topic, include_replayed=include_replayed, dry_run=dry_run)
    results = run(_replay(bootstrap_servers, topic_prefix, wanted, plan, endpoints.database_urls))
    if as_json:
        echo_json({"dry_run": dry_run, "entries": results})
        return
    out = console()
    if not results:
        out.print("no dead letters to replay")
        return
    sent = [r for r in results if not r["skipped"]]
    verb = "would replay" if dry_run else "replayed"
    table = Table(
        title=f"{verb} {len(sent)} of {len(results)} dead letter(s)", title_justify="left"
    )
    for column in ("id", "type", "key", "to", "expect"):
        table.add_column(column, overflow="fold")
    for result in results:
        to = result["to_topic"]
        if result["skipped"]:
            to = Text(f"skipped: replayed before as {', '.join(result['replayed_as'])}", "dim")
        elif not dry_run:
            to = f"{to}[{result['partition']}]@{result['offset']}"
        table.add_row(
            result["id"], result["type"] or "?", result["key"] or "∅", to, result["expect"]
        )
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


@dataclass(frozen=True)
class ReplayPlan:
    topic: str | None
    include_replayed: bool
    dry_run: bool


async def _replay(
    bootstrap_servers: str,
    prefix: str,
    wanted: Sequence[EntryId],
    plan: ReplayPlan,
    database_urls: Mapping[str, str],
) -> list[dict[str, Any]]:
    async with Broker(bootstrap_servers, prefix) as broker:
        if wanted:
            entries = await fetch(broker, wanted)
        else:
            entries = await scan(broker, dead_letter_topics(broker, plan.topic), show_progress=True)
        for entry in entries:
            broker.require_topic(entry.retry_topic)
        replayed = await replays(broker, entries)
        expected = await expected_outcomes(entries, database_urls)
        results: list[dict[str, Any]] = [
            {
                "id": entry.id,
                "type": entry.record.type,
                "key": entry.record.key,
                "event_id": entry.record.header("ce_id"),
                "consumer": entry.consumer,
                "to_topic": entry.retry_topic,
                "replayed_as": replayed[entry.id],
                "skipped": bool(not wanted and replayed[entry.id] and not plan.include_replayed),
                "expect": expected[entry.id],
            }
            for entry in entries
        ]
        to_send = [e for e, r in zip(entries, results, strict=True) if not r["skipped"]]
        if plan.dry_run or not to_send:
            return results
        sending = [r for r in results if not r["skipped"]]
        with progress("replaying", len(to_send)) as bar:
            landed = republish(broker, to_send)
            for result, (partition, offset) in zip(sending, [x async for x in landed], strict=True):
                result.update(partition=partition, offset=offset)
                advance(bar)
    return results
