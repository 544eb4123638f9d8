"""`choreo saga ORDER_ID`: one order's story, its events on every topic (dead letters
included) in time order, next to each service's current view of it from its own database."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from choreo.avro import default_store
from choreo.cli.broker import Broker
from choreo.cli.options import (
    DEFAULT_BOOTSTRAP_SERVERS,
    BootstrapOption,
    JsonOption,
    PrefixOption,
    parse_order_id,
)
from choreo.cli.output import (
    CliError,
    advance,
    cell,
    console,
    echo_json,
    fits,
    moment,
    progress,
    prose,
    run,
)
from choreo.cli.records import RecordView, view
from choreo.cli.service_views import QUERIES, ServiceView, service_views, shown_columns
from choreo.dead_letters import (
    CONSUMER,
    ERROR_TYPE,
    ORIGINAL_OFFSET,
    ORIGINAL_PARTITION,
    ORIGINAL_TOPIC,
)
from choreo.events import EVENT_TOPICS
from choreo.stack.config import StackConfig, resolve_endpoints

# Currencies without minor units (ISO 4217 exponent 0, as Stripe lists them).
_ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA"}
    | {"PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)


_SUMMARY_SHOWN = 100
"""Characters of a summary a timeline row shows."""


def register(app: typer.Typer) -> None:
    app.command(help=prose(saga.__doc__), epilog=_EPILOG)(saga)


_EPILOG = (
    "Databases: <SERVICE>_DATABASE_URL (ORDER_, INVENTORY_, PAYMENT_, NOTIFICATION_), else "
    "DATABASE_URL (a server; each service's own database on it), else `choreo up`'s embedded "
    "PostgreSQL. A database that cannot be reached is reported in its view. Exit status 1 "
    "when no topic and no database knows the order."
)


def saga(
    order_id: Annotated[
        str, typer.Argument(metavar="ORDER_ID", parser=parse_order_id, help="The order (a UUID).")
    ],
    bootstrap_servers: BootstrapOption = DEFAULT_BOOTSTRAP_SERVERS,
    topic_prefix: PrefixOption = "",
    as_json: JsonOption = False,
) -> None:
    """Trace one order through the saga: its records on every event, dead-letter and retry
    topic in time order (topic, partition, offset, type, source), and what the order,
    inventory, payment and notification services each hold about it now."""
    endpoints = resolve_endpoints(StackConfig(environment=dict(os.environ)))
    trace = run(_trace(order_id, bootstrap_servers, topic_prefix, endpoints.database_urls))
    if as_json:
        echo_json(trace.to_json())
    else:
        print_trace(console(), trace)


@dataclass(frozen=True)
class Trace:
    order_id: str
    topics: tuple[str, ...]
    """The topics that were searched."""
    timeline: tuple[RecordView, ...]
    views: tuple[ServiceView, ...]

    @property
    def dead_letters(self) -> list[RecordView]:
        return [record for record in self.timeline if record.is_dead_letter]

    def dead_letters_of(self, service: str) -> list[RecordView]:
        """The dead letters of `service`'s consumer (in its `<service>.dlq` topic)."""
        return [r for r in self.dead_letters if r.topic.endswith(f"{service}.dlq")]

    def replays_of(self, dead_letter: RecordView) -> list[RecordView]:
        """The records `choreo dlq replay` republished from `dead_letter`."""
        # A replay that failed again is dead-lettered with the header too: that is no replay.
        return [
            r
            for r in self.timeline
            if r.header("dlq.replayed.from") == dead_letter.id and not r.is_dead_letter
        ]

    def not_applied_by(self, record: RecordView) -> list[str]:
        """`consumer: error type` for each consumer that dead-lettered `record` itself (a
        forgery its signature gave away, a record its facts contradict, a poison one): those
        consumers did not apply it, whatever its summary says."""
        where = (record.topic, str(record.partition), str(record.offset))
        return [
            f"{letter.header(CONSUMER) or '?'}: {letter.header(ERROR_TYPE) or '?'}"
            for letter in self.dead_letters
            if (
                letter.header(ORIGINAL_TOPIC),
                letter.header(ORIGINAL_PARTITION),
                letter.header(ORIGINAL_OFFSET),
            )
            == where
        ]

    @property
    def status(self) -> str | None:
        for service_view in self.views:
            if service_view.service == "order" and service_view.knows_order:
                status: str | None = service_view.rows["orders"][0].get("status")
                return status
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "status": self.status,
            "topics": list(self.topics),
            "timeline": [
                {
                    **record.to_json(),
                    "summary": summary(record),
                    "not_applied_by": self.not_applied_by(record),
                }
                for record in self.timeline
            ],
            "services": {
                v.service: {
                    **v.to_json(),
                    "dead_letters": [r.id for r in self.dead_letters_of(v.service)],
                }
                for v in self.views
            },
            "dead_letters": [
                {
                    "id": record.id,
                    "consumer": record.header("dlq.consumer"),
                    "original_topic": record.header("dlq.original.topic"),
                    "type": record.type,
                    "error_type": record.header("dlq.error.type"),
                    "error_message": record.header("dlq.error.message"),
                    "failed_at": record.header("dlq.failed_at"),
                    "replayed_as": [replay.id for replay in self.replays_of(record)],
                }
                for record in self.dead_letters
            ],
        }


async def _trace(
    order_id: str, bootstrap_servers: str, prefix: str, database_urls: Mapping[str, str]
) -> Trace:
    store = default_store()
    wanted = order_id.encode()
    timeline: list[RecordView] = []
    async with Broker(bootstrap_servers, prefix) as broker:
        event_topics = {f"{prefix}{topic}" for topic in EVENT_TOPICS}
        topics = [t for t in broker.topics() if t in event_topics or t.endswith((".dlq", ".retry"))]
        beginning, end = await broker.offsets(broker.partitions(*topics))
        total = sum(end[tp] - beginning[tp] for tp in end)
        with progress(f"searching {len(topics)} topics", total) as bar:
            async for record in broker.read(beginning, end):
                advance(bar)
                subject = next((v for k, v in record.headers if k == "ce_subject"), None)
                if wanted in (record.key, subject):
                    timeline.append(view(record, store))
    event_ids = {
        event_id
        for record in timeline
        if not record.is_dead_letter and (event_id := record.header("ce_id"))
    }
    views = await service_views(database_urls, order_id, event_ids)
    trace = Trace(order_id, tuple(topics), tuple(timeline), tuple(views))
    if not timeline and not any(v.knows_order for v in views):
        unreachable = [v.service for v in views if v.error]
        also = f" ({', '.join(unreachable)} database unreachable)" if unreachable else ""
        raise CliError(
            f"no order {order_id}: no record of it on {len(topics)} topics and no row in the "
            f"services' databases{also}"
        )
    return trace


def money(amount: object, currency: object) -> str:
    """Minor units as people read them: 5000 USD is `50.00 USD`."""
    if not isinstance(amount, int) or not isinstance(currency, str):
        return f"{amount} {currency}"
    if currency.upper() in _ZERO_DECIMAL:
        return f"{amount} {currency}"
    sign = "-" if amount < 0 else ""
    whole, cents = divmod(abs(amount), 100)
    return f"{sign}{whole}.{cents:02d} {currency}"


def summary(record: RecordView) -> str:
    """One line on what a record of the saga says."""
    if record.is_dead_letter:
        header = record.header
        return (
            f"dead letter: {header('dlq.error.type')} after {header('dlq.attempts')} "
            f"attempt(s) on {header('dlq.original.topic')}"
        )
    if record.error is not None:
        return f"undecodable: {record.error}"
    said = _event_summary(record.type or "", record.value or {})
    replayed = record.header("dlq.replayed.from")
    if not replayed:
        return said
    return f"{said} (replayed from {replayed})" if said else f"replayed from {replayed}"


def _event_summary(record_type: str, data: Mapping[str, Any]) -> str:
    lines = data.get("items") or []
    match record_type:
        case "OrderCreated":
            total = money(data.get("total_amount"), data.get("currency"))
            return f"{len(lines)} line(s), total {total}"
        case "StockReserved":
            return f"{len(lines)} line(s) reserved"
        case "StockRejected":
            missing = ", ".join(str(p) for p in data.get("unavailable_product_ids") or [])
            return f"{data.get('reason')}: {missing or 'no product named'}"
        case "StockReleased":
            return f"{len(lines)} line(s) released: {data.get('reason')}"
        case "PaymentSucceeded":
            charged = money(data.get("amount"), data.get("currency"))
            return f"charged {charged} ({data.get('provider_payment_id')})"
        case "PaymentFailed":
            return f"{data.get('decline_code')}: {data.get('message')}"
        case "RiskAssessed":
            rules = ", ".join(str(r.get("rule")) for r in data.get("reasons") or [])
            held = (
                f", on hold until {data['review_expires_at']}"
                if data.get("review_expires_at")
                else ""
            )
            return f"{data.get('decision')}, score {data.get('score')} ({rules or 'no rule'}){held}"
        case "PaymentActionRequired":
            waits = money(data.get("amount"), data.get("currency"))
            return (
                f"{waits} awaits the customer's authentication "
                f"({data.get('next_action_type')}, {data.get('provider_payment_id')})"
            )
        case "PaymentRefunded":
            refunded = money(data.get("amount"), data.get("currency"))
            return f"refunded {refunded} ({data.get('provider_refund_id')})"
        case "OrderConfirmed":
            return f"confirmed, {money(data.get('total_amount'), data.get('currency'))}"
        case "OrderCancelled":
            charged = ", had been charged" if data.get("charged") else ""
            return f"{data.get('reason')} (was {data.get('previous_status')}{charged})"
    return ""


def print_trace(out: Console, trace: Trace) -> None:
    status = trace.status or _no_status(trace)
    out.print(Text.assemble("order ", (trace.order_id, "bold"), "  ", (status, "bold")))
    out.print()
    _print_timeline(out, trace)
    for service_view in trace.views:
        out.print()
        _print_view(out, trace, service_view)


def _no_status(trace: Trace) -> str:
    order_view = next((v for v in trace.views if v.service == "order"), None)
    if order_view is not None and order_view.error:
        return "status unknown: the order service's database cannot be read"
    return "unknown to the order service"


def _print_timeline(out: Console, trace: Trace) -> None:
    if not trace.timeline:
        out.print(f"no record of this order on the {len(trace.topics)} topics searched")
        return
    times = [moment(record.timestamp) for record in trace.timeline]
    days = {time.partition("T")[0] for time in times}
    title = f"timeline: {len(trace.timeline)} record(s)"
    if len(days) == 1:
        # One day (the usual saga): the day goes in the title, the rows keep the time.
        title += f" on {days.pop()}, UTC"
        times = [time.partition("T")[2].removesuffix("Z") for time in times]
    table = Table(title=title, title_justify="left")
    for column in ("time", "record", "type", "source"):
        table.add_column(column, no_wrap=True)
    table.add_column("summary", overflow="fold")
    for record, time in zip(trace.timeline, times, strict=True):
        refused = [] if record.is_dead_letter else trace.not_applied_by(record)
        style = "red" if record.is_dead_letter or record.error or refused else ""
        said = summary(record)
        if refused:
            said = f"NOT APPLIED by {', '.join(refused)}" + (f"; it said: {said}" if said else "")
        if len(said) > _SUMMARY_SHOWN:
            # Every record is whole in --json.
            said = said[: _SUMMARY_SHOWN - 1] + "…"
        table.add_row(
            time,
            f"{record.topic}[{record.partition}]@{record.offset}",
            record.type or "?",
            source_of(record),
            Text(said, style=style),
        )
    out.print(table)


def source_of(record: RecordView) -> str:
    """Which service wrote the record (`order`); for a dead letter, the consumer that parked it."""
    source = record.header("dlq.consumer") if record.is_dead_letter else record.header("ce_source")
    return (source or "-").strip("/").removesuffix("_service")


def _print_view(out: Console, trace: Trace, service_view: ServiceView) -> None:
    out.print(
        Text.assemble((f"{service_view.service} service", "bold"), f"  {service_view.database}")
    )
    if service_view.error:
        out.print(Text(f"  {service_view.error}", style="red"))
    for query in QUERIES[service_view.service] if not service_view.error else ():
        if query.table in service_view.problems:
            problem = service_view.problems[query.table]
            out.print(Text(f"  {query.table}: {problem}", style="yellow"))
            continue
        rows = service_view.rows.get(query.table, [])
        if not rows:
            out.print(Text(f"  {query.table}: nothing about this order", style="dim"))
            continue
        out.print(Text(f"  {query.table}", style="italic"))
        columns = shown_columns(query, rows)
        if query.single:
            shown = Table.grid(padding=(0, 2))
            shown.add_column(style="dim")
            shown.add_column()
            for column in columns:
                if rows[0][column] is not None:
                    shown.add_row(column, cell(rows[0][column]))
        else:
            shown = Table(show_edge=False, pad_edge=False)
            for column in columns:
                shown.add_column(column, overflow="fold")
            for row in rows:
                shown.add_row(*(cell(row[column]) for column in columns))
            if not fits(out, Padding(shown, (0, 0, 0, 4), expand=False)):
                # Too wide for this console: each row as facts, one after the other.
                shown = Table.grid(padding=(0, 2))
                shown.add_column(style="dim")
                shown.add_column(overflow="fold")
                for number, row in enumerate(rows):
                    if number:
                        shown.add_row("", "")
                    for column in columns:
                        shown.add_row(column, cell(row[column]))
        out.print(Padding(shown, (0, 0, 0, 4), expand=False))
    for record in trace.dead_letters_of(service_view.service):
        replays = ", ".join(replay.id for replay in trace.replays_of(record))
        said = Text(f"  {record.id} {summary(record)}: {record.header('dlq.error.message')}")
        said.stylize("red")
        if replays:
            said.append(f" (replayed as {replays})", style="green")
        out.print(said, soft_wrap=True)
