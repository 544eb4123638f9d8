"""`choreo up` runs the whole system on this machine; `choreo migrate` migrates databases."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.text import Text

from choreo.cli.output import prose
from choreo.logs import LogFormat, resolve_log_format
from choreo.stack.config import (
    EMBEDDED_PARTITIONS,
    SERVICES,
    StackConfig,
    StackPorts,
    resolve_endpoints,
)
from choreo.stack.console import PrefixedOutput, print_url_table
from choreo.stack.demo import seed_catalog
from choreo.stack.errors import StackError
from choreo.stack.postgres import create_database
from choreo.stack.stack import Stack
from choreo.stack.supervisor import SUPERVISOR_NAME, stop_signals_interrupt

_PORT_DEFAULTS = ", ".join(f"{name}={getattr(StackPorts(), name)}" for name in StackPorts.names())
_PORTS_HELP = f"Listen on PORT for PART (repeatable). Parts and defaults: {_PORT_DEFAULTS}."
_BASE_PORT_HELP = (
    "Give the parts consecutive ports from N, in this order: "
    + ", ".join(StackPorts.names())
    + ". --port overrides single parts."
)

PortOption = Annotated[
    list[str] | None, typer.Option("--port", metavar="PART=PORT", help=_PORTS_HELP)
]
StackPortOption = Annotated[
    list[str] | None,
    typer.Option(
        "--port",
        metavar="PART=PORT",
        help="Where the running `choreo up` has PART, when not at its default (repeatable); "
        f"migrate looks for postgres only (default {StackPorts().postgres}).",
    ),
]
"""`choreo migrate`'s --port: it reaches a running stack's PostgreSQL, it listens on nothing."""
BasePortOption = Annotated[
    int | None, typer.Option("--base-port", metavar="N", help=_BASE_PORT_HELP, min=1, max=65525)
]


def register(app: typer.Typer) -> None:
    app.command(help=prose(up.__doc__), epilog=_UP_EPILOG)(up)
    app.command(help=prose(migrate.__doc__))(migrate)


_UP_EPILOG = (
    "Parts given by the environment are used instead of the embedded ones: DATABASE_URL "
    "(a PostgreSQL server URL) or <SERVICE>_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, "
    "STRIPE_API_BASE, SENDGRID_HOST, TWILIO_API_BASE. The services get <SERVICE>_PORT, "
    "<SERVICE>_SERVICE_URL, <SERVICE>_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, STRIPE_API_BASE, "
    "SENDGRID_HOST, TWILIO_API_BASE, JWT_JWKS_URL (the user service's keys, unless JWT_JWKS is "
    "set), CHOREO_ENV (default dev) and, in dev, CHOREO_ADMIN_EMAIL / CHOREO_ADMIN_PASSWORD "
    "defaults; STRIPE_API_KEY, SENDGRID_API_KEY, TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN "
    "default to test keys of the emulators. Ctrl-C (or SIGTERM) stops everything; exit status 0 "
    "then, 1 when a part fails."
)


def up(
    demo: Annotated[
        bool, typer.Option("--demo", help="Also seed a demo catalog (through the gateway).")
    ] = False,
    data_dir: Annotated[
        Path, typer.Option(help="Where PostgreSQL and the Stripe emulator keep their data.")
    ] = Path(".choreo"),
    durable_broker: Annotated[
        bool,
        typer.Option(
            "--durable-broker",
            help="Keep the broker's records in S3 on a loopback SeaweedFS server, on disk in"
            " the data directory, so that neither a broker crash nor a restart of the stack"
            " loses a record, dead letter or committed offset.",
        ),
    ] = False,
    partitions: Annotated[
        int, typer.Option(help="Partitions of each topic created.", min=1)
    ] = EMBEDDED_PARTITIONS,
    port: PortOption = None,
    base_port: BasePortOption = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds each group of parts has to become ready.", min=1)
    ] = 60.0,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            envvar="CHOREO_LOG_FORMAT",
            help="The services' lines: text (short, coloured on a terminal), json (one object a"
            " line, every field) or auto: text when this output is a terminal, else json.",
        ),
    ] = LogFormat.AUTO,
) -> None:
    """Start PostgreSQL, the broker, the Stripe, SendGrid and Twilio emulators and the six
    services, print their URLs, and keep them running until Ctrl-C: a part that exits, or stops
    answering for 15 s, is restarted on its own."""
    console = _console()
    ports = stack_ports(base_port, port or [])
    # The services write to a pipe, so `choreo up` chooses for them by its own output.
    services_log_format = resolve_log_format(log_format, console.is_terminal)
    config = StackConfig(
        data_dir=data_dir,
        ports=ports,
        partitions=partitions,
        durable_broker=durable_broker,
        environment={**os.environ, "CHOREO_LOG_FORMAT": services_log_format.value},
        readiness_timeout=timeout,
    )
    output = PrefixedOutput(console, [SUPERVISOR_NAME, *StackPorts.names()])
    stack = Stack(config, output)
    with stop_signals_interrupt():
        try:
            with stack:
                with console.status("starting") as status:

                    def progress(pending: Sequence[str]) -> None:
                        status.update(f"waiting for {', '.join(pending) or 'the next parts'}")

                    stack.start(progress=progress)
                if demo:
                    _seed_demo(stack)
                admin = stack.admin()
                shown = admin if "CHOREO_ADMIN_PASSWORD" not in config.environment else None
                print_url_table(console, stack.links(), shown)
                stack.watch()
        except KeyboardInterrupt:
            _print_restarts(console, stack)
            console.print("stopped", style="bold")
            if "KAFKA_BOOTSTRAP_SERVERS" not in config.environment:
                console.print(_what_a_restart_keeps(config.data_dir, durable_broker))
        except StackError as error:
            _print_restarts(console, stack)
            console.print(Text(f"error: {error}", style="red"))
            raise typer.Exit(1) from None


def migrate(
    service: Annotated[
        str | None,
        typer.Argument(
            metavar="SERVICE", help="One service (e.g. order or order_service); all when omitted."
        ),
    ] = None,
    port: StackPortOption = None,
) -> None:
    """Bring service databases to their latest schema (the services also do it at start-up).

    Uses the same database URLs as `choreo up`: <SERVICE>_DATABASE_URL, else DATABASE_URL, else
    the embedded PostgreSQL (which must be running)."""
    console = _console()
    config = StackConfig(ports=stack_ports(None, port or []), environment=dict(os.environ))
    endpoints = resolve_endpoints(config)
    wanted = service.removesuffix("_service") if service else None
    targets = [s for s in SERVICES if s.database and wanted in (None, s.name)]
    if not targets:
        names = ", ".join(s.name for s in SERVICES if s.database)
        raise typer.BadParameter(
            f"no service {service!r} with a database; one of {names}", param_hint="SERVICE"
        )
    from choreo.migrate import migrate as migrate_database

    server = endpoints.database_server
    try:
        for target in targets:
            database = target.database
            assert database is not None  # only services with a database are targets
            if server is not None and database in endpoints.databases_to_create:
                create_database(server, database)
            console.print(f"migrating {target.name}")
            migrate_database(target.name, endpoints.database_urls[target.name])
    except Exception as error:
        console.print(Text(f"error: {target.name}: {error}", style="red"))
        raise typer.Exit(1) from None
    console.print("migrated", style="bold")


def _console() -> Console:
    console = Console()
    if not console.is_terminal:
        # Piped output (CI, tests, `| tee`) keeps whole lines and URLs instead of 80 columns.
        console = Console(width=200)
    return console


def stack_ports(base_port: int | None, overrides: list[str]) -> StackPorts:
    """The parts' ports from --base-port and --port PART=PORT (`choreo up`, `choreo bench`)."""
    ports = StackPorts.from_base(base_port) if base_port is not None else StackPorts()
    parsed: dict[str, int] = {}
    for override in overrides:
        name, _, value = override.partition("=")
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise typer.BadParameter(f"{override!r} is not PART=PORT", param_hint="--port")
        parsed[name.strip()] = int(value)
    try:
        return ports.with_overrides(parsed)
    except StackError as error:
        raise typer.BadParameter(str(error), param_hint="--port") from None


def _what_a_restart_keeps(data_dir: Path, durable_broker: bool) -> str:
    """What the next `choreo up` on the same data directory finds (the embedded broker keeps
    its records in memory; with --durable-broker, in SeaweedFS's files in `data_dir`)."""
    databases = "the databases (users, products, orders, payments, notifications)"
    if durable_broker:
        return (
            f"kept in {data_dir}: {databases}, and every topic, dead letter and committed "
            f"offset (the broker's S3 store)"
        )
    return (
        f"kept in {data_dir}: {databases}; gone: every topic, dead letter and committed offset "
        f"(the embedded broker held them in memory), except the events of the last 15 minutes, "
        f"which the services publish again from their outboxes when they start"
    )


def _print_restarts(console: Console, stack: Stack) -> None:
    """How many times each part was restarted while it ran, when any was."""
    restarts = stack.supervisor.restart_counts()
    if any(restarts.values()):
        counts = ", ".join(f"{part} {count}" for part, count in restarts.items() if count)
        console.print(f"restarts: {counts}")


def _seed_demo(stack: Stack) -> None:
    """Seed the demo catalog; a failure is reported and the stack keeps running."""
    admin = stack.admin()
    if admin is None:
        stack.supervisor.say("no admin credentials (CHOREO_ADMIN_EMAIL/PASSWORD): no demo catalog")
        return
    try:
        with httpx.Client(base_url=stack.url_of("gateway"), timeout=15) as gateway:
            seed_catalog(gateway, admin, stack.supervisor.say)
    except StackError as error:
        stack.supervisor.say(str(error))
