"""`choreo bench`: drive orders through the gateway and measure the saga (throughput, latency,
CPU per saga), the ceiling of its primitives and a synchronous baseline, in one run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from choreo.cli.options import PrefixOption
from choreo.cli.output import EXIT_USAGE, console, error_console, fail, prose, run
from choreo.cli.up import BasePortOption, PortOption, stack_ports
from choreo.kafka import PLAINTEXT, KafkaSecurity, KafkaSecurityError
from choreo.stack.config import EMBEDDED_PARTITIONS
from choreo.stack.errors import StackError
from choreo.stack.supervisor import stop_signals_interrupt

if TYPE_CHECKING:
    from choreo.bench.plan import Plan


def register(app: typer.Typer) -> None:
    app.command(help=prose(bench.__doc__), epilog=_EPILOG)(bench)


_EPILOG = (
    "Figures: sustained sagas/s counts the orders whose expected outcome (OrderConfirmed; "
    "OrderCancelled for the declined and out-of-stock shares) reached order.event within the "
    "measured window; latency runs from when an order was due (open-loop) or sent (closed-loop) "
    "to that record's timestamp; a saga with no outcome within --outcome-timeout is lost, one "
    "with another outcome or a refused POST failed. CPU is read from /proc for each part's "
    "process tree. docs/architecture.md (Benchmark) says how each figure is measured. Exit "
    "status 0 when the run completed (whatever its figures), 1 when it could not run, 2 on bad "
    "options."
)


def bench(
    rate: Annotated[
        float | None,
        typer.Option(help="Orders per second, open-loop (the default, at 10/s).", min=0.01),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            help="Closed-loop instead: this many sagas in flight, each worker placing its next "
            "order once the last one's outcome is on order.event.",
            min=1,
        ),
    ] = None,
    duration: Annotated[
        float, typer.Option(help="Seconds measured, after the warm-up.", min=1)
    ] = 60.0,
    warmup: Annotated[
        float,
        typer.Option(help="Seconds of load before measuring (left out of the figures).", min=0),
    ] = 10.0,
    declined_share: Annotated[
        float,
        typer.Option(
            help="Share of orders paid with a card that is declined (0 to 1).", min=0, max=1
        ),
    ] = 0.0,
    out_of_stock_share: Annotated[
        float,
        typer.Option(help="Share of orders for a product with no stock (0 to 1).", min=0, max=1),
    ] = 0.0,
    customers: Annotated[
        int, typer.Option(help="Customers with a good card that place the orders.", min=1)
    ] = 20,
    products: Annotated[
        int, typer.Option(help="Products (with ample stock) the orders pick from.", min=1)
    ] = 10,
    outcome_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds after an order was due by which its outcome must be seen, "
            "else it is lost.",
            min=1,
        ),
    ] = 120.0,
    idle_seconds: Annotated[
        float,
        typer.Option(
            help="Seconds the idle stack's CPU is measured before the load (0: skip).", min=0
        ),
    ] = 10.0,
    ceiling_seconds: Annotated[
        float,
        typer.Option(
            help="Seconds for each primitive of the ceiling (0: skip the ceiling).", min=0
        ),
    ] = 5.0,
    ceiling_clients: Annotated[
        int,
        typer.Option(
            help="Clients of the ceiling's transactions and requests (also measured at 1).", min=1
        ),
    ] = 8,
    baseline_seconds: Annotated[
        float, typer.Option(help="Seconds of the synchronous baseline (0: skip it).", min=0)
    ] = 15.0,
    baseline_concurrency: Annotated[
        int | None,
        typer.Option(
            help="Orders in flight in the synchronous baseline (default: --concurrency, else 16).",
            min=1,
        ),
    ] = None,
    gateway: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Bench a running stack through this gateway (e.g. http://127.0.0.1:8000); its "
            "other parts are found where `choreo up` puts them (--base-port, --port, and "
            "DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, STRIPE_API_BASE, SENDGRID_HOST). Without "
            "it, the bench starts a stack of its own with the limits raised.",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Data directory of the stack the bench starts (default: a fresh one, "
            "removed afterwards; a given one is kept, with the parts' log)."
        ),
    ] = None,
    durable_broker: Annotated[
        bool,
        typer.Option(
            "--durable-broker",
            help="The broker keeps its records in S3 on SeaweedFS "
            "(passed to the stack the bench starts; say it of a running one).",
        ),
    ] = False,
    partitions: Annotated[
        int,
        typer.Option(
            help="Partitions of each topic the stack the bench starts creates (choreo up's"
            " --partitions).",
            min=1,
        ),
    ] = EMBEDDED_PARTITIONS,
    port: PortOption = None,
    base_port: BasePortOption = None,
    topic_prefix: PrefixOption = "",
    admin_email: Annotated[
        str | None,
        typer.Option(
            envvar="CHOREO_ADMIN_EMAIL",
            show_envvar=True,
            metavar="EMAIL",
            help="The admin who creates the bench's products (the dev default otherwise).",
        ),
    ] = None,
    admin_password: Annotated[
        str | None,
        typer.Option(
            envvar="CHOREO_ADMIN_PASSWORD",
            show_envvar=True,
            metavar="PASSWORD",
            help="The admin's password.",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the order mix and the choices of customer and product.")
    ] = 0,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", metavar="PATH", help="Write every figure to PATH as JSON."),
    ] = None,
    png_path: Annotated[
        Path | None,
        typer.Option(
            "--png",
            metavar="PATH",
            help="Draw latency and throughput over time and CPU "
            "per saga by process to PATH (needs matplotlib: the `bench` extra).",
        ),
    ] = None,
) -> None:
    """Drive orders through the gateway and measure the saga: sustained sagas/s, POST →
    outcome latency, lost and failed sagas, CPU per saga by process and the stack's idle CPU;
    then, on the same machine, the ceiling of the saga's primitives (step transactions, broker
    records, bare HTTP requests), η = sagas/s ÷ R*, and a synchronous baseline of the same flow.

    Without --gateway it starts the whole stack as `choreo up` does (a fresh data directory,
    free ports, the gateway's and the user service's per-address limits raised) and stops it
    afterwards."""
    if rate is not None and concurrency is not None:
        fail("--rate and --concurrency exclude each other: open-loop or closed-loop", EXIT_USAGE)
    if declined_share + out_of_stock_share > 1:
        fail("--declined-share and --out-of-stock-share add up to more than 1", EXIT_USAGE)
    if gateway is not None and data_dir is not None:
        fail(
            "--data-dir is for a stack the bench starts; --gateway names a running one", EXIT_USAGE
        )
    if gateway is not None and not gateway.startswith(("http://", "https://")):
        fail(f"--gateway {gateway!r} is not an http(s) URL", EXIT_USAGE)
    if png_path is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            fail("--png needs matplotlib: pip install -e '.[bench]'", EXIT_USAGE)
    for option, path in (("--json", json_path), ("--png", png_path)):
        if path is not None and (problem := _unwritable(path)):
            fail(f"{option} {path}: {problem}", EXIT_USAGE)
    if (admin_email is None) != (admin_password is None):
        fail("give both --admin-email and --admin-password, or neither", EXIT_USAGE)
    # choreo.bench reads topics with this package's Broker: imported here, not at the top.
    from choreo.bench.plan import Plan
    from choreo.bench.report import png, tables

    try:
        ports = stack_ports(base_port, port or []) if base_port or port else None
    except typer.BadParameter as error:
        fail(error.format_message(), EXIT_USAGE)
    plan = Plan(
        rate=None if concurrency is not None else (rate or 10.0),
        concurrency=concurrency,
        duration=duration,
        warmup=warmup,
        declined_share=declined_share,
        out_of_stock_share=out_of_stock_share,
        customers=customers,
        products=products,
        outcome_timeout=outcome_timeout,
        idle_seconds=idle_seconds,
        ceiling_seconds=ceiling_seconds,
        ceiling_clients=ceiling_clients,
        baseline_seconds=baseline_seconds,
        baseline_concurrency=baseline_concurrency or concurrency or 16,
        seed=seed,
        gateway=gateway,
        data_dir=data_dir,
        durable_broker=durable_broker,
        partitions=partitions,
        ports=ports,
        topic_prefix=topic_prefix,
        admin=(admin_email, admin_password) if admin_email and admin_password else None,
        environment=dict(os.environ),
    )
    result = _measure(plan)
    out = console()
    for table in tables(result):
        out.print(table)
    if json_path is not None:
        try:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(result, indent=2) + "\n")
        except OSError as error:
            fail(f"cannot write --json {json_path}: {error.strerror or error}")
        out.print(f"figures written to {json_path}")
    if png_path is not None:
        try:
            png_path.parent.mkdir(parents=True, exist_ok=True)
            png(result, png_path)
        except OSError as error:
            fail(f"cannot write --png {png_path}: {error.strerror or error}")
        out.print(f"chart written to {png_path}")


def _unwritable(path: Path) -> str | None:
    """Why the bench could not write `path` after its run, or None: checked before the run,
    so that minutes of measuring are not lost to a typo."""
    if path.is_dir():
        return "is a directory"
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{parent} is not writable"
    if path.exists() and not os.access(path, os.W_OK):
        return "is not writable"
    return None


def _measure(plan: Plan) -> dict[str, Any]:
    from choreo.bench.report import Reporter
    from choreo.bench.run import measure
    from choreo.bench.target import own_stack, running_stack

    reporter = Reporter(error_console())
    security = _security(plan)
    with stop_signals_interrupt():
        try:
            if plan.gateway is not None:
                return run(measure(plan, running_stack(plan), security, reporter))
            reporter.say("starting the stack")
            with own_stack(plan, reporter.tick) as target:
                reporter.done()
                reporter.say(f"stack ready: gateway {target.gateway}")
                return run(measure(plan, target, security, reporter))
        except StackError as error:
            fail(f"the stack: {error}")
        except KeyboardInterrupt:
            fail("interrupted", 130)
        finally:
            reporter.done()


def _security(plan: Plan) -> KafkaSecurity:
    """A broker the bench starts is PLAINTEXT; a given one is reached as the services reach it."""
    if plan.gateway is None and "KAFKA_BOOTSTRAP_SERVERS" not in plan.environment:
        return PLAINTEXT
    try:
        return KafkaSecurity.from_environment(plan.environment)
    except KafkaSecurityError as error:
        fail(f"cannot reach the broker securely: {error}")
