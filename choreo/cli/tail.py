"""`choreo tail TOPIC`: a topic's records decoded (Avro to JSON) with their headers, partition,
offset and timestamp, read without a consumer group."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from choreo.avro import default_store
from choreo.cli.broker import Broker
from choreo.cli.options import (
    DEFAULT_BOOTSTRAP_SERVERS,
    BootstrapOption,
    JsonOption,
    PrefixOption,
    parse_duration,
    parse_record_type,
)
from choreo.cli.output import console, echo_json, error_console, prose, run
from choreo.cli.records import RecordView, render, view

DEFAULT_WAIT_SECONDS = 3.0


@dataclass(frozen=True)
class TailRequest:
    topic: str
    from_beginning: bool = False
    follow: bool = False
    key: str | None = None
    record_type: str | None = None
    since: timedelta | None = None
    limit: int | None = None
    wait_seconds: float = DEFAULT_WAIT_SECONDS

    @property
    def reads_history(self) -> bool:
        return self.from_beginning or self.since is not None

    def matches(self, record: RecordView, now: datetime) -> bool:
        if self.key is not None and record.key != self.key:
            return False
        if self.record_type is not None and record.type != self.record_type:
            return False
        if self.since is not None:
            return record.timestamp is not None and record.timestamp >= now - self.since
        return True


def register(app: typer.Typer) -> None:
    app.command(help=prose(tail.__doc__), epilog=_EPILOG)(tail)


_EPILOG = (
    "Without --from-beginning or --since only records published from now on are shown: "
    "for --wait seconds, or until Ctrl-C with --follow. History is printed in timestamp "
    "order across partitions. Undecodable records are shown raw (a hex preview and the "
    "reason). Exit status 0, also when nothing matched; 1 when the topic does not exist or "
    "the broker cannot be reached."
)


def tail(
    topic: Annotated[
        str,
        typer.Argument(metavar="TOPIC", help="The topic, e.g. order.create (the prefix is added)."),
    ],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start from the oldest record.")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new records until Ctrl-C.")
    ] = False,
    key: Annotated[
        str | None,
        typer.Option(metavar="KEY", help="Only records with this key (an order or product id)."),
    ] = None,
    record_type: Annotated[
        str | None,
        typer.Option(
            "--type", metavar="RECORD", parser=parse_record_type, help="Only this event type."
        ),
    ] = None,
    since: Annotated[
        timedelta | None,
        typer.Option(
            metavar="DURATION",
            parser=parse_duration,
            help="Only records of the last DURATION (10m, 2h, 1d); implies reading history.",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", metavar="N", min=1, help="Stop after N matching records."),
    ] = None,
    wait: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            min=0,
            help="How long to wait for new records without --follow or history.",
        ),
    ] = DEFAULT_WAIT_SECONDS,
    bootstrap_servers: BootstrapOption = DEFAULT_BOOTSTRAP_SERVERS,
    topic_prefix: PrefixOption = "",
    as_json: JsonOption = False,
) -> None:
    """Print a topic's records, decoded, with headers, partition, offset and timestamp.

    Reads partitions directly, without a consumer group: tailing never moves a service's
    offsets. --json prints one JSON object per line.
    """
    request = TailRequest(
        topic=topic,
        from_beginning=from_beginning,
        follow=follow,
        key=key,
        record_type=record_type,
        since=since,
        limit=limit,
        wait_seconds=wait,
    )
    out = console()

    def emit(record: RecordView) -> None:
        if as_json:
            echo_json(record.to_json(), lines=True)
        else:
            out.print(render(record), soft_wrap=True)

    def notice(message: str) -> None:
        error_console().print(message, style="dim")

    shown = run(_tail(request, bootstrap_servers, topic_prefix, emit, notice))
    if shown == 0 and not as_json:
        what = "matching records" if request.key or request.record_type else "records"
        if request.reads_history or request.follow:
            error_console().print(f"no {what}")
        else:
            error_console().print(
                f"no new {what} in {request.wait_seconds:g} s (--from-beginning shows what "
                "the topic holds; --follow keeps waiting)"
            )


async def _tail(
    request: TailRequest,
    bootstrap_servers: str,
    prefix: str,
    emit: Callable[[RecordView], None],
    notice: Callable[[str], None],
) -> int:
    """Print the records `request` asks for; return how many. `notice` hears (on stderr)
    when the tail starts waiting for new records."""
    store = default_store()
    stop = asyncio.Event()
    shown = 0
    with _stop_on_signals(stop):
        async with Broker(bootstrap_servers, prefix) as broker:
            topic = broker.require_topic(request.topic)
            beginning, end = await broker.offsets(broker.partitions(topic))
            now = datetime.now(UTC)
            if request.reads_history:
                async for record in broker.read(beginning, end):
                    if stop.is_set():
                        return shown
                    shown += _show(request, view(record, store), now, emit)
                    if request.limit is not None and shown >= request.limit:
                        return shown
                if not request.follow:
                    return shown
            if request.follow:
                notice(f"following {topic}; Ctrl-C stops")
            else:
                notice(f"waiting {request.wait_seconds:g} s for new records on {topic}")
                asyncio.get_running_loop().call_later(request.wait_seconds, stop.set)
            async for record in broker.follow(end, stop):
                shown += _show(request, view(record, store), now, emit)
                if request.limit is not None and shown >= request.limit:
                    return shown
    return shown


def _show(
    request: TailRequest, record: RecordView, now: datetime, emit: Callable[[RecordView], None]
) -> int:
    if not request.matches(record, now):
        return 0
    emit(record)
    return 1


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Ctrl-C (or SIGTERM) ends the tail cleanly instead of interrupting it mid-record."""
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (ValueError, RuntimeError, NotImplementedError):
            continue  # not the main thread (an in-process test runner): no signals to catch
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
