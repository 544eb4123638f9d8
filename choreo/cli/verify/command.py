"""`choreo verify`: read everything (outboxes and consumer lag first, to learn whether the system
is quiet; then each database's rows, Stripe, the e-mail sink, the dead letters), judge it, and
say so to people or scripts, with an exit status they can trust."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import typer
from aiokafka.errors import KafkaError

from choreo.cli.broker import Broker
from choreo.cli.options import (
    DEFAULT_BOOTSTRAP_SERVERS,
    BootstrapOption,
    JsonOption,
    PrefixOption,
    parse_duration,
)
from choreo.cli.output import (
    EXIT_FAILURE,
    CliError,
    advance,
    console,
    echo_json,
    progress,
    prose,
    run,
)
from choreo.cli.verify import databases as db
from choreo.cli.verify.facts import BROKER, SINK, STRIPE, Facts, database
from choreo.cli.verify.pipeline import (
    DeadLetters,
    Lags,
    consumer_lag,
    dead_letters,
    outboxes,
    read_dead_letters,
    read_lags,
)
from choreo.cli.verify.provider_checks import confirmation_emails, stripe_charges
from choreo.cli.verify.providers import UnavailableError, read_sink, read_stripe
from choreo.cli.verify.report import Report, print_report
from choreo.cli.verify.saga_checks import orders_terminal, services_agree, stock_conserved
from choreo.stack.config import StackConfig, resolve_endpoints
from choreo.stack.stripe import TEST_SECRET_KEY

T = TypeVar("T")

DEFAULT_GRACE_SECONDS = 30.0


def parse_since(text: str) -> datetime:
    """A duration back from now (`10m`, `2h`, `1d`) or a time (`2026-05-04T12:00:00Z`)."""
    if text.strip()[:1].isdigit() and text.strip()[-1:].lower() in "smhdw":
        return datetime.now(UTC) - parse_duration(text)
    try:
        since = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a duration (10m, 2h, 1d) nor a time (2026-05-04T12:00:00Z)"
        ) from None
    return since if since.tzinfo else since.replace(tzinfo=UTC)


def register(app: typer.Typer) -> None:
    app.command(help=prose(verify.__doc__), epilog=_EPILOG)(verify)


_EPILOG = (
    "Sources: <SERVICE>_DATABASE_URL (USER_, ORDER_, INVENTORY_, PAYMENT_, NOTIFICATION_), else "
    "DATABASE_URL, else `choreo up`'s embedded PostgreSQL; STRIPE_API_BASE and STRIPE_API_KEY "
    "(`choreo up`'s localstripe and its test key by default); SENDGRID_HOST (the e-mail sink). "
    "Exit status 0: consistent (warnings allowed); 1: a violation, or a check that could not "
    "run (a database or the broker unreachable)."
)


def verify(
    since: Annotated[
        datetime | None,
        typer.Option(
            metavar="T",
            parser=parse_since,
            help="Only orders placed, intents created and letters dead since T: a duration "
            "back from now (10m, 2h, 1d) or an RFC 3339 time.",
        ),
    ] = None,
    grace: Annotated[
        float,
        typer.Option(
            min=0,
            metavar="SECONDS",
            help="How long an effect may be on its way before its absence is a violation.",
        ),
    ] = DEFAULT_GRACE_SECONDS,
    bootstrap_servers: BootstrapOption = DEFAULT_BOOTSTRAP_SERVERS,
    topic_prefix: PrefixOption = "",
    as_json: JsonOption = False,
) -> None:
    """Audit the whole system's consistency, read-only: every service's database, the
    broker, and, where they can be reached, Stripe and the e-mail sink.

    Checks: every order CONFIRMED or CANCELLED, or inside its deadline plus the grace; the
    services agree on each ended order (confirmed: stock committed and one succeeded payment;
    cancelled: stock released and no charge or a full refund), and hold no stock or money for
    an order the order service does not know; per product, available + reserved + sold equals
    the stock received through admin adjustments (and reserved and sold match the
    reservations); at Stripe, no order charged twice, no intent left open, every succeeded
    charge of a confirmed order or refunded in full; exactly one order-confirmed notice per
    confirmed order on each channel the customer chose for order updates (e-mail by default,
    SMS, or e-mail instead of an SMS skipped for want of a phone number; e-mails counted at the
    e-mail sink, else from the notification service's deliveries; SMS from its deliveries);
    each outbox's backlog, each service consumer group's lag, and each dead-letter topic's
    size.

    The system may be running: an order whose effects may still be on their way is judged
    only when it last changed before a moment every outbox was drained and no group lagged,
    or longer ago than --grace. A backlog or lag is a violation only when its oldest row or
    record waited longer than --grace; a committed offset beyond the log's end always is.

    Dead letters: an entry that was replayed, or whose event its consumer applied since, is
    settled; any other is a warning (it does not change the exit status): whatever a missing
    step broke shows as a violation of the checks above. Stripe or the e-mail sink out of
    reach: that check is skipped (the e-mails are then counted from the deliveries).
    """
    environment = dict(os.environ)
    endpoints = resolve_endpoints(StackConfig(environment=environment))
    stripe_key = environment.get("STRIPE_API_KEY") or (
        TEST_SECRET_KEY if endpoints.embedded_stripe else None
    )
    request = Request(
        since=since,
        grace=timedelta(seconds=grace),
        bootstrap_servers=bootstrap_servers,
        prefix=topic_prefix,
        database_urls=endpoints.database_urls,
        stripe_api_base=endpoints.stripe_api_base,
        stripe_api_key=stripe_key,
        sendgrid_host=endpoints.sendgrid_host,
    )
    report = run(audit(request))
    if as_json:
        echo_json(report.to_json())
    else:
        print_report(console(), report)
    if not report.ok:
        raise typer.Exit(EXIT_FAILURE)


@dataclass(frozen=True)
class Request:
    since: datetime | None
    grace: timedelta
    bootstrap_servers: str
    prefix: str
    database_urls: Mapping[str, str]
    stripe_api_base: str
    stripe_api_key: str | None
    sendgrid_host: str


async def audit(request: Request) -> Report:
    databases = db.ServiceDatabases(request.database_urls)
    facts = Facts(now=datetime.now(UTC), since=request.since, grace=request.grace)
    try:
        with progress("connecting", 1) as bar:
            await databases.open()
            advance(bar)
        lags, letters = await _read_everything(request, databases, facts)
    finally:
        await databases.close()
    checks = [
        orders_terminal(facts),
        services_agree(facts),
        stock_conserved(facts),
        stripe_charges(facts),
        confirmation_emails(facts),
        outboxes(facts),
        consumer_lag(facts, lags),
        dead_letters(facts, letters),
    ]
    scope = {
        "since": request.since,
        "grace_seconds": request.grace.total_seconds(),
        "audited_at": facts.now,
        "quiet_since": facts.quiet_since,
    }
    return Report(checks, scope)


async def _read_everything(
    request: Request, databases: db.ServiceDatabases, facts: Facts
) -> tuple[Lags | None, DeadLetters | None]:
    services = sorted(request.database_urls)
    with progress("reading outboxes", len(services)) as bar:
        for service in services:
            outbox = await databases.read(service, db.outbox_reader(service), snapshot=False)
            if outbox is not None:
                facts.outboxes[service] = outbox
            advance(bar)
    if "order" in facts.outboxes:
        facts.now = facts.outboxes["order"].now  # the clock the order rows are judged by
    async with contextlib.AsyncExitStack() as stack:
        broker: Broker | None = None
        try:
            broker = await stack.enter_async_context(
                Broker(request.bootstrap_servers, request.prefix)
            )
        except CliError as error:
            facts.unavailable[BROKER] = str(error)
        lags = None
        if broker is not None:
            with progress("reading consumer offsets", 1) as bar:
                lags = await _from_broker(facts, read_lags(broker))
                advance(bar)
        drained = len(facts.outboxes) == len(services) and not any(
            outbox.backlog for outbox in facts.outboxes.values()
        )
        if drained and lags is not None and lags.quiet:
            facts.quiet_since = facts.now
        await _read_rows(request, databases, facts)
        letters = None
        if broker is not None and BROKER not in facts.unavailable:
            letters = await _from_broker(facts, read_dead_letters(broker, request.database_urls))
    return lags, letters


async def _from_broker(facts: Facts, reading: Coroutine[Any, Any, T]) -> T | None:
    """What `reading` read from the broker, or None with the reason in `facts`."""
    try:
        return await reading
    except CliError as error:
        facts.unavailable[BROKER] = str(error)
    except KafkaError as error:
        facts.unavailable[BROKER] = f"broker error: {type(error).__name__}: {error}"
    return None


async def _read_rows(request: Request, databases: db.ServiceDatabases, facts: Facts) -> None:
    with progress("reading databases, Stripe and e-mails", 6) as bar:
        facts.orders = await databases.read("order", db.orders_reader(request.since))
        ids = set(facts.orders or ())
        advance(bar)
        found = await databases.read("inventory", db.reservations_reader(ids, request.since))
        if found is not None:
            facts.reservations, facts.products = found
        advance(bar)
        facts.payments = await databases.read("payment", db.payments_reader(ids, request.since))
        advance(bar)
        orders = (facts.orders or {}).values()
        events = {event for order in orders for event in order.confirmed_event_ids}
        users = {order.user_id for order in orders}
        facts.notifications = await databases.read(
            "notification", db.notifications_reader(events, users)
        )
        advance(bar)
        others = set(facts.reservations or ()) | set(facts.payments or ())
        if facts.orders is not None and others - ids:
            known = await databases.read("order", db.known_orders_reader(others - ids))
            facts.known_elsewhere = known or set()
        await _read_providers(request, facts)
        advance(bar, 2)
    for service, why in databases.errors.items():
        facts.unavailable[database(service)] = why


async def _read_providers(request: Request, facts: Facts) -> None:
    if request.stripe_api_key is None:
        facts.skipped[STRIPE] = "no STRIPE_API_KEY"
    else:
        try:
            facts.intents = await read_stripe(request.stripe_api_base, request.stripe_api_key)
        except UnavailableError as error:
            facts.skipped[STRIPE] = str(error)
    try:
        facts.emails = await read_sink(request.sendgrid_host)
    except UnavailableError as error:
        facts.skipped[SINK] = str(error)
