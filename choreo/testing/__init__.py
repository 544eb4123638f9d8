"""Pytest fixtures every package's tests import: real PostgreSQL and a real broker, once per run.

Enable with `pytest_plugins = ["choreo.testing"]` in a conftest. Each test gets a fresh
database and its own topic prefix, so tests never see each other's rows or records.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import os
import random
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
import uvicorn
from aiokafka import AIOKafkaConsumer
from starlette.types import ASGIApp

from choreo import kafka
from choreo.auth import SigningKey
from choreo.avro import default_store
from choreo.events import (
    OWNER_OF_TOPIC,
    SYSTEM_TOPICS,
    Event,
    decode_record,
    headers_of,
    source_of,
)
from choreo.records import Record
from choreo.sealing import Opener
from choreo.service import Service
from choreo.signing import SIGNATURE_HEADER, EventKeys, EventSigner, generate_keys
from choreo.stack.broker import TansuBroker
from choreo.stack.postgres import EmbeddedPostgres
from choreo.stack.probes import http_ok
from choreo.stack.process import ChildProcess, ProcessSpec
from choreo.stack.stripe import TEST_SECRET_KEY, LocalStripe
from choreo.web.server import Server

DATABASE_OF_SERVICE = {
    "user": "users",
    "order": "orders",
    "payment": "payments",
    "inventory": "inventory",
    "notification": "notifications",
}


# The publishers' event signing keys of this test run: every service `start_service` starts
# signs with its own and verifies with these; `publish` signs as the owner of each topic.
EVENT_SIGNERS: dict[str, EventSigner]
EVENT_KEYS: EventKeys
EVENT_SIGNERS, EVENT_KEYS = generate_keys()


def event_key_environment() -> dict[str, str]:
    """CHOREO_EVENT_KEYS and every publisher's `<SERVICE>_EVENT_SIGNING_KEY`, this run's."""
    return {
        "CHOREO_EVENT_KEYS": EVENT_KEYS.to_json(),
        **{
            f"{s.upper()}_EVENT_SIGNING_KEY": signer.to_pem() for s, signer in EVENT_SIGNERS.items()
        },
    }


# The notification service's sealing key of this test run: the user service `start_service`
# starts seals reset tokens to it, the notification service opens them with it, and so can a
# test (`NOTIFICATION_OPENER.open(...)`).
NOTIFICATION_OPENER = Opener.generate()


def sealing_key_environment() -> dict[str, str]:
    """CHOREO_NOTIFICATION_KEY and NOTIFICATION_SEALING_KEY, this run's."""
    return {
        "CHOREO_NOTIFICATION_KEY": NOTIFICATION_OPENER.public_key,
        "NOTIFICATION_SEALING_KEY": NOTIFICATION_OPENER.to_pem(),
    }


# Below Linux's ephemeral range (32768-60999): a port the kernel hands out for port 0 is
# also one it hands to outgoing connections, which can take it before the part binds it.
_TEST_PORTS = range(20_000, 32_768)
_PORT_CHOICE = random.SystemRandom()
"""Independent of the `random` module's shared state, which a test (or Hypothesis, between
examples) may seed: seeded, every worker's next port is the same one, and two fixtures that
pick before either binds collide (seen once: eight tests of one worker on 127.0.0.1:25156)."""


_GIVEN: set[int] = set()
"""Ports this process handed out already: a stack's parts are given theirs one after another
before any binds, so a free port must not be one given before (a fresh-clone CI run once gave
the broker and the order service of one `choreo up` the same port)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses right now and that this process has not
    handed out before, outside the ephemeral range."""
    for _ in range(100):
        port = _PORT_CHOICE.choice(_TEST_PORTS)
        if port in _GIVEN:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError("no free port in 20000-32767")


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL server for the whole test run.

    Its data lives in a directory of its own, not under pytest's numbered temp folders: a
    pytest run started meanwhile (another suite on the same machine) deletes all but the
    newest three of those, and a server whose data directory vanishes dies mid-run.
    """
    with tempfile.TemporaryDirectory(prefix="choreo-test-pg-") as scratch:
        server = EmbeddedPostgres(Path(scratch) / "data", free_port())
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The bootstrap address of a Tansu broker for the whole test run."""
    broker = TansuBroker(free_port())
    broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
def database_url(postgres: EmbeddedPostgres) -> Iterator[str]:
    """A fresh, empty database (SQLAlchemy URL, psycopg 3 driver), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.create_database(name)
    try:
        yield postgres.url(name).replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        postgres.drop_database(name)


@pytest.fixture
def topic_prefix() -> str:
    """A prefix that gives this test topics of its own."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest_asyncio.fixture
async def topics(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[str]:
    """Create every Choreo topic under this test's prefix; yields the prefix."""
    names = [f"{topic_prefix}{t}" for t in SYSTEM_TOPICS]
    await kafka.ensure_topics(kafka_bootstrap, names, partitions=3)
    yield topic_prefix


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    """The key tests sign tokens with; services started here trust it."""
    return SigningKey.generate()


@pytest.fixture(scope="session")
def stripe_api_base() -> Iterator[str]:
    """A localstripe emulator for the whole test run."""
    stripe = LocalStripe(free_port())
    stripe.start()
    try:
        yield stripe.api_base
    finally:
        stripe.stop()


class ServiceProcess:
    """One service run as in production (`python -m <service>_service.main`) on a free port."""

    def __init__(
        self, service: str, environment: Mapping[str, str], port: int | None = None
    ) -> None:
        self.service = service
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._environment = {**environment, f"{service.upper()}_PORT": str(self.port)}
        self._child: ChildProcess | None = None

    @property
    def database_url(self) -> str | None:
        """The URL of the service's own database (None for the gateway)."""
        return self._environment.get(f"{self.service.upper()}_DATABASE_URL")

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running()

    def start(self, timeout: float = 60.0) -> None:
        spec = ProcessSpec(
            name=self.service,
            command=[sys.executable, "-m", f"{self.service}_service.main"],
            ready=http_ok(f"{self.url}/readyz"),
            port=self.port,
            environment=self._environment,
            stop_grace=15.0,
        )
        self._child = ChildProcess(spec)
        self._child.start(timeout)

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None

    def kill(self) -> None:
        """SIGKILL: the process dies at once, with no chance to commit or clean up."""
        if self._child is not None:
            self._child.send_signal(signal.SIGKILL)
            self._child.stop()
            self._child = None

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30.0)


StartService = Callable[..., ServiceProcess]


@pytest.fixture
def start_service(
    postgres: EmbeddedPostgres,
    kafka_bootstrap: str,
    topics: str,
    signing_key: SigningKey,
    stripe_api_base: str,
) -> Iterator[StartService]:
    """Start services of this test: each its own fresh database, all on this test's topics.

    `start_service("order", ORDER_SAGA_TIMEOUT_SECONDS="3")` returns the running process;
    extra keyword arguments become environment variables. Starting a service a second time
    reuses its database and port (a restart). Everything started is stopped at the end.
    """
    started: list[ServiceProcess] = []
    databases: dict[str, str] = {}
    ports: dict[str, int] = {}

    def start(service: str, **environment: str) -> ServiceProcess:
        env = {
            **os.environ,
            "CHOREO_ENV": "test",
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_FETCH_MAX_WAIT_MS": str(kafka.FAST_FETCH_MAX_WAIT_MS),  # a memory broker
            "CHOREO_TOPIC_PREFIX": topics,
            "JWT_JWKS": json.dumps(signing_key.jwks()),
            # The user service signs with the same key the other services trust.
            "USER_JWT_PRIVATE_KEY": signing_key.to_pem(),
            "USER_JWT_KEY_ID": signing_key.kid,
            "STRIPE_API_BASE": stripe_api_base,
            "STRIPE_API_KEY": TEST_SECRET_KEY,
            **event_key_environment(),
            **sealing_key_environment(),
            **{f"{name.upper()}_SERVICE_URL": f"http://127.0.0.1:{p}" for name, p in ports.items()},
            **environment,
        }
        if service in DATABASE_OF_SERVICE:
            if service not in databases:
                databases[service] = f"{DATABASE_OF_SERVICE[service]}_{uuid.uuid4().hex[:8]}"
                postgres.create_database(databases[service])
            env[f"{service.upper()}_DATABASE_URL"] = postgres.url(databases[service])
        process = ServiceProcess(service, env, ports.get(service))
        ports[service] = process.port
        process.start()
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.stop()
    for name in databases.values():
        postgres.drop_database(name)


@dataclass(frozen=True)
class Keyed:
    """An event sent under another Kafka key than its subject: it lands in that key's
    partition, behind that key's records (a probe that proves they were applied)."""

    event: Event[Record]
    key: str


async def publish(
    bootstrap: str,
    prefix: str,
    *events: Event[Record] | Record | Keyed,
    signer: EventSigner | None = None,
) -> None:
    """Put `events` on their topics (under `prefix`) exactly as a service's relay would:
    signed with the key of the service that owns each topic, unless `signer` is given. A bare
    record gets an envelope of its own (a new id, now); the Kafka key is the subject unless
    the event is `Keyed`."""
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        store = default_store()
        for given in events:
            key = given.key if isinstance(given, Keyed) else None
            event = given.event if isinstance(given, Keyed) else given
            if not isinstance(event, Event):
                event = Event(event)
            if not event.source:  # a relay names its service; so does the owner of the type
                event = dataclasses.replace(event, source=source_of(OWNER_OF_TOPIC[event.topic]))
            value = store.encode(event.type, event.record.to_avro())
            text = headers_of(event)
            owner = signer or EVENT_SIGNERS[OWNER_OF_TOPIC[event.topic]]
            text[SIGNATURE_HEADER] = owner.sign(event.topic, text, value)
            await producer.send_and_wait(
                f"{prefix}{event.topic}",
                value,
                key=(key or event.subject).encode(),
                headers=[(k, v.encode()) for k, v in text.items()],
            )
    finally:
        await producer.stop()


async def apply(service: Service, *events: Event[Record] | Record) -> list[bool]:
    """Apply `events` in order to `service`'s handlers as its consumer would (inbox claim and
    handler in one transaction) on its real database, without a broker: a handler test runs in
    milliseconds. Each result says whether the event was applied (False: the inbox had it).
    The database must be migrated (`choreo.migrate.migrate`)."""
    applied = []
    for given in events:
        applied.append(await service.apply(given if isinstance(given, Event) else Event(given)))
    return applied


async def collect_events(
    bootstrap: str,
    topic: str,
    until: Callable[[list[Event[Record]]], bool],
    *,
    timeout: float = 30.0,
) -> list[Event[Record]]:
    """Read `topic` (a physical name) from the start until `until(events so far)` holds.

    Raises TimeoutError naming what was seen when the condition does not hold in time.
    """
    # No group: the reader gets every partition at once, without a join round.
    reader = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=kafka.FETCH_MAX_WAIT_MS,
    )
    await reader.start()
    events: list[Event[Record]] = []
    store = default_store()
    try:
        async with asyncio.timeout(timeout):
            while not until(events):
                for records in (await reader.getmany(timeout_ms=200)).values():
                    events += [decode_record(r.headers, r.value, store) for r in records]
    except TimeoutError:
        seen = ", ".join(f"{e.type}({e.subject})" for e in events) or "nothing"
        raise TimeoutError(f"{topic}: condition not met in {timeout} s; saw {seen}") from None
    finally:
        await reader.stop()
    return events


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    what: str,
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
) -> None:
    """Call `check` every `interval` seconds until it holds; fail the test naming `what` when
    it does not within `timeout` seconds. `check` may be a plain or an async function; a check
    under way at the deadline is let finish, and counts."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        held = check()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if loop.time() >= deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(interval)


async def query(database_url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """The rows of `sql` run on the database at `database_url` (a service's
    `ServiceProcess.database_url`, or the `database_url` fixture's SQLAlchemy form), committed;
    a statement that returns no rows (an UPDATE) gives []."""
    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    async with await psycopg.AsyncConnection.connect(conninfo) as connection:
        cursor = await connection.execute(sql, params)
        return await cursor.fetchall() if cursor.description else []


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, *, port: int | None = None) -> AsyncIterator[str]:
    """Serve `app` with uvicorn in this event loop, on 127.0.0.1 at `port` (a free one when
    None), until the block ends; yields its base URL. A stand-in of another service runs so:
    the test's own code answers its requests, and can change how."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None)
    server = Server(config)
    task = asyncio.create_task(server.serve(), name=f"serve :{port}")
    try:
        while not server.started:
            if task.done():
                await task  # raises what stopped it
                raise RuntimeError(f"uvicorn stopped before serving on port {port}")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        await task


def repository_root() -> Path:
    return Path(__file__).resolve().parent.parent.parent
