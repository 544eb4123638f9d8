"""The stack under test: one `choreo bench` starts (as `choreo up` does, with its limits
raised), or one already running, found where `choreo up` would put it."""

from __future__ import annotations

import contextlib
import random
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from choreo.bench.cpu import listeners
from choreo.bench.plan import RAISED_LIMITS, Plan
from choreo.stack.config import (
    DEFAULT_ADMIN_EMAIL,
    DEFAULT_ADMIN_PASSWORD,
    SERVICES,
    StackConfig,
    StackPorts,
    resolve_endpoints,
)
from choreo.stack.process import port_is_free
from choreo.stack.sendgrid_sink import SINK_API_KEY
from choreo.stack.stack import Stack
from choreo.stack.stripe import TEST_SECRET_KEY

_PORT_RANGE = range(20_000, 30_000)
"""Below Linux's ephemeral range, so that no outgoing connection takes a part's port."""


@dataclass
class Target:
    """Where every part of the stack under test is, and how to find its processes."""

    gateway: str
    bootstrap_servers: str
    topic_prefix: str
    database_server: str | None
    """A PostgreSQL server URL: the scratch databases of the ceiling and the baseline go there."""
    database_urls: Mapping[str, str]
    """Each service's database, for the counts of inbox and outbox rows."""
    service_urls: Mapping[str, str]
    stripe_api_base: str
    stripe_api_key: str
    sendgrid_host: str
    sendgrid_api_key: str
    admin: tuple[str, str] | None
    started: bool
    """True when the bench started the stack (and raised its limits)."""
    processes: Callable[[], dict[str, int]]
    """Each part's main process id, now (a part restarted gets a new one)."""
    restarts: Callable[[], Mapping[str, int]] = dict
    limits: Mapping[str, str] = field(default_factory=dict)
    log: Path | None = None


@contextlib.contextmanager
def own_stack(plan: Plan, progress: Callable[[str], None]) -> Iterator[Target]:
    """Start the whole stack as `choreo up` does, on free ports (or `plan.ports`), in a fresh
    data directory (or `plan.data_dir`), its parts' output going to a log file there."""
    with contextlib.ExitStack() as cleanup:
        if plan.data_dir is None:
            scratch = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="choreo-bench-"))
            data_dir = Path(scratch) / "stack"
        else:
            data_dir = plan.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        environment = dict(plan.environment)
        limits = {
            name: environment.setdefault(name, value) for name, value in RAISED_LIMITS.items()
        }
        ports = plan.ports or free_ports()
        config = StackConfig(
            data_dir=data_dir,
            ports=ports,
            durable_broker=plan.durable_broker,
            partitions=plan.partitions,
            environment=environment,
        )
        log_path = data_dir / "bench-stack.log"
        log = cleanup.enter_context(log_path.open("a", encoding="utf-8"))
        stack = Stack(config, _LogFile(log))
        cleanup.callback(stack.stop)

        def waiting(pending: Sequence[str]) -> None:
            names = ", ".join(pending) or "the next parts"
            progress(f"starting the stack: waiting for {names}")

        stack.start(progress=waiting)
        stop_watching = threading.Event()
        watcher = threading.Thread(
            target=stack.supervisor.watch, args=(stop_watching,), name="bench-watch", daemon=True
        )
        watcher.start()

        def stop_watcher() -> None:
            stop_watching.set()
            watcher.join()

        cleanup.callback(stop_watcher)
        endpoints = stack.endpoints
        stripe_key = environment.get("STRIPE_API_KEY", TEST_SECRET_KEY)
        sendgrid_key = environment.get("SENDGRID_API_KEY", SINK_API_KEY)

        def processes() -> dict[str, int]:
            return {
                child.name: child.pid
                for child in stack.supervisor.children
                if child.pid is not None and child.running()
            }

        yield Target(
            gateway=stack.url_of("gateway"),
            bootstrap_servers=endpoints.kafka_bootstrap_servers,
            topic_prefix=environment.get("CHOREO_TOPIC_PREFIX", ""),
            database_server=endpoints.database_server,
            database_urls=endpoints.database_urls,
            service_urls={service.name: stack.url_of(service.name) for service in SERVICES},
            stripe_api_base=endpoints.stripe_api_base,
            stripe_api_key=stripe_key,
            sendgrid_host=endpoints.sendgrid_host,
            sendgrid_api_key=sendgrid_key,
            admin=plan.admin or stack.admin(),
            started=True,
            processes=processes,
            restarts=stack.supervisor.restart_counts,
            limits=limits,
            log=log_path if plan.data_dir is not None else None,
        )


def running_stack(plan: Plan) -> Target:
    """A stack that runs already: its gateway is `plan.gateway`, every other part where
    `choreo up` puts it (its default ports, `plan.ports`, or the environment's addresses)."""
    assert plan.gateway is not None
    ports = plan.ports or StackPorts()
    environment = dict(plan.environment)
    config = StackConfig(ports=ports, environment=environment)
    endpoints = resolve_endpoints(config)
    gateway = plan.gateway.rstrip("/")
    local_ports = {name: ports.of(name) for name in StackPorts.names()}
    gateway_port = urlsplit(gateway).port
    if gateway_port is not None:
        local_ports["gateway"] = gateway_port
    server = endpoints.database_server or next(iter(endpoints.database_urls.values()), None)
    postgres_port = urlsplit(server).port if server else None
    if postgres_port is not None:
        local_ports["postgres"] = postgres_port
    if not plan.durable_broker:
        local_ports.pop("s3")

    def processes() -> dict[str, int]:
        return listeners(local_ports)

    admin = plan.admin
    if admin is None and environment.get("CHOREO_ENV", "dev") == "dev":
        admin = (
            environment.get("CHOREO_ADMIN_EMAIL", DEFAULT_ADMIN_EMAIL),
            environment.get("CHOREO_ADMIN_PASSWORD", DEFAULT_ADMIN_PASSWORD),
        )
    return Target(
        gateway=gateway,
        bootstrap_servers=endpoints.kafka_bootstrap_servers,
        topic_prefix=plan.topic_prefix,
        database_server=server and _server_of(server),
        database_urls=endpoints.database_urls,
        service_urls={
            service.name: f"http://127.0.0.1:{ports.of(service.name)}" for service in SERVICES
        },
        stripe_api_base=endpoints.stripe_api_base,
        stripe_api_key=environment.get("STRIPE_API_KEY", TEST_SECRET_KEY),
        sendgrid_host=endpoints.sendgrid_host,
        sendgrid_api_key=environment.get("SENDGRID_API_KEY", SINK_API_KEY),
        admin=admin,
        started=False,
        processes=processes,
    )


def free_ports() -> StackPorts:
    """A free loopback port for every part."""
    chosen: set[int] = set()
    candidates = random.sample(_PORT_RANGE, len(_PORT_RANGE))
    for port in candidates:
        if len(chosen) == len(StackPorts.names()):
            break
        if port_is_free(port):
            chosen.add(port)
    return StackPorts(**dict(zip(StackPorts.names(), sorted(chosen), strict=True)))


def _server_of(url: str) -> str:
    """A database URL's server (its database replaced by `postgres`)."""
    return urlsplit(url)._replace(path="/postgres").geturl()


class _LogFile:
    """The stack's output sink: every part's lines, behind its name, in one file."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, part: str, line: str) -> None:
        with self._lock:
            if not self._stream.closed:
                self._stream.write(f"{part:<12} | {line}\n")
                self._stream.flush()
