"""The embedded stack's parts, each started and stopped on free ports: PostgreSQL, the broker,
the SendGrid sink, the stack that runs them all (the supervisor has its own tests)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pickle
import signal
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from choreo import kafka
from choreo.kafka import ensure_topics
from choreo.sealing import Opener
from choreo.stack.broker import TansuBroker
from choreo.stack.config import (
    TOPICS,
    StackConfig,
    StackPorts,
    resolve_endpoints,
    service_environment,
)
from choreo.stack.demo import DEMO_PRODUCTS, seed_catalog
from choreo.stack.errors import StackError
from choreo.stack.postgres import EmbeddedPostgres
from choreo.stack.process import port_is_free
from choreo.stack.s3 import SeaweedS3
from choreo.stack.sendgrid_sink import SendGridSink
from choreo.stack.stack import Stack
from choreo.stack.supervisor import Supervisor
from choreo.testing import free_port

MAIL = {
    "personalizations": [{"to": [{"email": "ada@example.com"}]}],
    "from": {"email": "shop@example.com"},
    "subject": "Your order",
    "content": [{"type": "text/plain", "value": "Thank you."}],
}
SENDGRID_AUTH = {"Authorization": "Bearer SG.test"}
EXTERNAL = ("postgres", "broker", "stripe", "sendgrid", "twilio")


def _gone(pids: list[int]) -> bool:
    return not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        for pid in pids
    )


def _family(pid: int) -> list[int]:
    process = psutil.Process(pid)
    return [pid, *(child.pid for child in process.children(recursive=True))]


def test_postgres_starts_creates_databases_and_stops(tmp_path: Path) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg", free_port())
    postgres.start()
    try:
        assert postgres.pid is not None
        family = _family(postgres.pid)
        assert postgres.create_database("orders") is True
        assert postgres.create_database("orders") is False
        url = postgres.url("orders")
        assert url == f"postgresql://postgres@127.0.0.1:{postgres.port}/orders"
        with psycopg.connect(url) as connection:
            assert connection.execute("SELECT current_database()").fetchone() == ("orders",)
        postgres.drop_database("orders")
        postgres.drop_database("orders")
        with psycopg.connect(postgres.url("postgres")) as connection:
            names = connection.execute("SELECT datname FROM pg_database").fetchall()
        assert ("orders",) not in names
    finally:
        postgres.stop()
    assert _gone(family)
    assert not postgres.accepts_connections()


def test_postgres_keeps_its_data_across_restarts(tmp_path: Path) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg", free_port())
    with postgres:
        postgres.create_database("kept")
    with postgres, psycopg.connect(postgres.url("kept")) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


async def test_broker_creates_topics_and_carries_a_record() -> None:
    broker = TansuBroker(free_port())
    broker.start()
    try:
        topic = f"stack-{uuid.uuid4().hex[:8]}"
        assert await ensure_topics(broker.bootstrap_servers, [topic], partitions=3) == [topic]
        assert await ensure_topics(broker.bootstrap_servers, [topic], partitions=3) == []
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap_servers, acks="all", enable_idempotence=False
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"hello", key=b"order-1")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            record = await consumer.getone()
        finally:
            await consumer.stop()
        assert (record.key, record.value) == (b"order-1", b"hello")
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def sendgrid() -> Iterator[str]:
    sink = SendGridSink(free_port())
    with sink:
        yield sink.host


@pytest.fixture
def mailbox(sendgrid: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sendgrid, timeout=5) as client:
        client.delete("/messages")
        client.delete("/_control/fail")
        yield client


def test_sendgrid_sink_accepts_and_lists_messages(mailbox: httpx.Client) -> None:
    first = mailbox.post("/v3/mail/send", json=MAIL, headers=SENDGRID_AUTH)
    second = mailbox.post(
        "/v3/mail/send", json={**MAIL, "subject": "Second"}, headers=SENDGRID_AUTH
    )
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.content == b""
    assert first.headers["X-Message-Id"]

    messages = mailbox.get("/messages").json()
    assert [message["subject"] for message in messages] == ["Your order", "Second"]
    assert messages[0]["id"] == first.headers["X-Message-Id"]
    assert messages[0]["received_at"].endswith("Z")
    assert messages[0]["personalizations"][0]["to"][0]["email"] == "ada@example.com"
    assert len(mailbox.get("/messages", params={"to": "ADA@example.com"}).json()) == 2
    assert mailbox.get("/messages", params={"to": "bob@example.com"}).json() == []

    assert mailbox.delete("/messages").status_code == 204
    assert mailbox.get("/messages").json() == []


def test_sendgrid_sink_rejects_what_sendgrid_rejects(mailbox: httpx.Client) -> None:
    unauthorized = mailbox.post("/v3/mail/send", json=MAIL)
    assert unauthorized.status_code == 401
    incomplete = mailbox.post("/v3/mail/send", json={"subject": "x"}, headers=SENDGRID_AUTH)
    assert incomplete.status_code == 400
    fields = {error["field"] for error in incomplete.json()["errors"]}
    assert fields == {"personalizations", "from", "content"}
    not_json = mailbox.post("/v3/mail/send", content=b"{", headers=SENDGRID_AUTH)
    assert not_json.status_code == 400
    assert mailbox.get("/messages").json() == []


def test_sendgrid_sink_fails_on_demand_then_heals(mailbox: httpx.Client) -> None:
    assert mailbox.post("/_control/fail", json={"status": 503, "count": 2}).status_code == 200
    statuses = [
        mailbox.post("/v3/mail/send", json=MAIL, headers=SENDGRID_AUTH).status_code
        for _ in range(3)
    ]
    assert statuses == [503, 503, 202]

    mailbox.post("/_control/fail", json={"status": 429})
    statuses = [
        mailbox.post("/v3/mail/send", json=MAIL, headers=SENDGRID_AUTH).status_code
        for _ in range(3)
    ]
    assert statuses == [429, 429, 429]
    assert mailbox.delete("/_control/fail").status_code == 204
    assert mailbox.post("/v3/mail/send", json=MAIL, headers=SENDGRID_AUTH).status_code == 202
    assert len(mailbox.get("/messages").json()) == 2
    assert mailbox.post("/_control/fail", json={"status": 200}).status_code == 422


def _own_environment() -> dict[str, str]:
    """This environment without anything that would replace an embedded part."""
    external = ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "STRIPE_API_BASE", "SENDGRID_HOST")
    return {
        name: value
        for name, value in os.environ.items()
        if name not in external and not name.endswith("_DATABASE_URL")
    }


def _free_ports() -> StackPorts:
    return StackPorts(**{name: free_port() for name in StackPorts.names()})


async def _topics(bootstrap_servers: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_stack_runs_the_embedded_parts_with_databases_and_topics(tmp_path: Path) -> None:
    config = StackConfig(
        data_dir=tmp_path / "choreo",
        ports=_free_ports(),
        partitions=2,
        environment=_own_environment(),
    )
    with Stack(config, lambda part, line: None) as stack:
        stack.start_infrastructure()
        names = sorted(child.name for child in stack.supervisor.children)
        assert names == ["broker", "postgres", "sendgrid", "stripe", "twilio"]
        for database in ("users", "orders", "payments", "inventory", "notifications"):
            url = f"postgresql://postgres@127.0.0.1:{config.ports.postgres}/{database}"
            with psycopg.connect(url) as connection:
                assert connection.execute("SELECT 1").fetchone() == (1,)
        assert set(TOPICS) <= asyncio.run(_topics(f"127.0.0.1:{config.ports.broker}"))
        stripe = httpx.post(
            f"http://127.0.0.1:{config.ports.stripe}/v1/customers",
            data={"email": "ada@example.com"},
            auth=("sk_test_choreo", ""),
        )
        assert stripe.status_code == 200
        links = {link.part: link for link in stack.links()}
        assert links["sendgrid"].url == f"http://127.0.0.1:{config.ports.sendgrid}/messages"
        assert links["twilio"].url == f"http://127.0.0.1:{config.ports.twilio}/messages"
        gateway = f"http://127.0.0.1:{config.ports.gateway}"
        assert (links["gateway"].url, links["docs"].url) == (f"{gateway}/api/v1", f"{gateway}/docs")
        assert all(link.embedded for link in links.values())
    assert all(port_is_free(config.ports.of(name)) for name in StackPorts.names())
    # The emulator saved its store when it stopped: the customer outlives it.
    with (tmp_path / "choreo" / "stripe.pickle").open("rb") as saved:
        assert f"customer:{stripe.json()['id']}" in pickle.load(saved)


def test_stack_uses_the_parts_the_environment_gives(
    postgres: EmbeddedPostgres, kafka_bootstrap: str, tmp_path: Path
) -> None:
    given_orders = postgres.url("given_orders")
    environment = {
        **_own_environment(),
        "DATABASE_URL": postgres.server_url,
        "ORDER_DATABASE_URL": given_orders,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STRIPE_API_BASE": "https://stripe.example.com",
        "SENDGRID_HOST": "https://sendgrid.example.com",
        "TWILIO_API_BASE": "https://twilio.example.com",
    }
    config = StackConfig(data_dir=tmp_path / "choreo", ports=_free_ports(), environment=environment)
    with Stack(config, lambda part, line: None) as stack:
        stack.start_infrastructure()
        assert stack.supervisor.children == ()
        with psycopg.connect(postgres.url("postgres")) as connection:
            databases = {row[0] for row in connection.execute("SELECT datname FROM pg_database")}
        assert {"users", "payments", "inventory", "notifications"} <= databases
        assert "orders" not in databases  # the order service was given its own URL
        assert not any(link.embedded for link in stack.links() if link.part in EXTERNAL)

    variables = service_environment(StackConfig(environment=environment), stack.endpoints)
    assert variables["ORDER_DATABASE_URL"] == given_orders
    assert variables["USER_DATABASE_URL"] == postgres.url("users")
    assert variables["KAFKA_BOOTSTRAP_SERVERS"] == kafka_bootstrap
    assert variables["STRIPE_API_BASE"] == "https://stripe.example.com"
    assert variables["SENDGRID_HOST"] == "https://sendgrid.example.com"
    assert variables["TWILIO_API_BASE"] == "https://twilio.example.com"


def test_services_learn_where_everything_is() -> None:
    ports = StackPorts.from_base(20000)
    config = StackConfig(ports=ports, environment={"PATH": "/usr/bin"})
    variables = service_environment(config, resolve_endpoints(config))
    assert variables["PATH"] == "/usr/bin"
    assert variables["CHOREO_ENV"] == "dev"
    assert variables["GATEWAY_PORT"] == "20000"
    assert variables["NOTIFICATION_PORT"] == "20005"
    assert variables["PAYMENT_SERVICE_URL"] == "http://127.0.0.1:20003"
    # The services reach the embedded server over its Unix socket.
    assert variables["ORDER_DATABASE_URL"] == (
        f"postgresql://postgres@:20006/orders?host=/tmp/choreo-pg-{os.getuid()}-20006"
    )
    assert "GATEWAY_DATABASE_URL" not in variables
    assert variables["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:20007"
    assert variables["STRIPE_API_BASE"] == "http://127.0.0.1:20008"
    assert variables["SENDGRID_HOST"] == "http://127.0.0.1:20009"
    assert variables["CHOREO_ADMIN_EMAIL"] == "admin@example.com"
    assert variables["JWT_JWKS_URL"] == "http://127.0.0.1:20001/api/v1/auth/jwks"
    assert variables["STRIPE_API_KEY"].startswith("sk_test_")
    assert variables["SENDGRID_API_KEY"]

    production = StackConfig(environment={"CHOREO_ENV": "prod"})
    assert "CHOREO_ADMIN_PASSWORD" not in service_environment(
        production, resolve_endpoints(production)
    )
    assert ports.with_overrides({"order": 1234}).order == 1234
    with pytest.raises(StackError, match="unknown part"):
        ports.with_overrides({"ordr": 1234})


async def _produce(bootstrap_servers: str, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=False
    )
    await producer.start()
    try:
        for number in range(count):
            await producer.send_and_wait(topic, str(number).encode(), key=b"order-1")
    finally:
        await producer.stop()


async def _consume_all(bootstrap_servers: str, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(30):
            while len(values) < count:
                batch = await consumer.getmany(timeout_ms=500)
                values += [record.value for records in batch.values() for record in records]
    finally:
        await consumer.stop()
    return values


def test_a_killed_durable_broker_is_restarted_with_its_records(tmp_path: Path) -> None:
    s3 = SeaweedS3(free_port(), tmp_path / "s3")
    broker = TansuBroker(
        free_port(), s3.storage_url, environment={**os.environ, **s3.client_environment()}
    )
    lines: list[tuple[str, str]] = []
    with Supervisor(lambda part, line: lines.append((part, line))) as supervisor:
        supervisor.start([s3.spec], timeout=60)
        supervisor.start([dataclasses.replace(broker.spec, restart=True)], timeout=30)
        asyncio.run(ensure_topics(broker.bootstrap_servers, ["kept"], partitions=2))
        asyncio.run(_produce(broker.bootstrap_servers, "kept", 50))

        watching = threading.Event()
        watcher = threading.Thread(target=supervisor.watch, args=(watching,), daemon=True)
        watcher.start()
        try:
            supervisor.kill("broker", signal.SIGKILL)
            deadline = time.monotonic() + 20
            restarted = ("choreo", "broker restarted")
            while restarted not in [(part, line[:16]) for part, line in list(lines)]:
                assert time.monotonic() < deadline, lines
                time.sleep(0.05)
            values = asyncio.run(_consume_all(broker.bootstrap_servers, "kept", 50))
        finally:
            watching.set()
            watcher.join(10)
        assert supervisor.restart_counts() == {"s3": 0, "broker": 1}
    assert values == [str(number).encode() for number in range(50)]


async def _read_as_a_service(bootstrap_servers: str, topic: str, count: int) -> int:
    """How many of `count` records a service's consumer (`choreo.kafka.consumer`, its
    settings' defaults) reads from the start of `topic` within 30 s."""
    consumer = kafka.consumer(bootstrap_servers, group_id=f"reader-{topic}", topics=[topic])
    await consumer.start()
    read = 0
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                while read < count:
                    batch = await consumer.getmany(timeout_ms=500)
                    read += sum(len(records) for records in batch.values())
    finally:
        await consumer.stop()
    return read


def test_a_consumer_reads_a_backlog_of_the_durable_broker(tmp_path: Path) -> None:
    # Tansu's S3 storage lists a partition's objects from the first within the fetch's wait and
    # returns nothing it has not listed: on moto, with a 20 ms wait, a consumer read 0 of these.
    s3 = SeaweedS3(free_port(), tmp_path / "s3")
    broker = TansuBroker(
        free_port(), s3.storage_url, environment={**os.environ, **s3.client_environment()}
    )
    with s3, broker:
        asyncio.run(ensure_topics(broker.bootstrap_servers, ["backlog"], partitions=1))
        asyncio.run(_produce(broker.bootstrap_servers, "backlog", 400))
        read = asyncio.run(_read_as_a_service(broker.bootstrap_servers, "backlog", 400))
    assert read == 400


async def _produce_concurrently(
    bootstrap_servers: str, topic: str, producers: int, each: int
) -> None:
    """`producers` producers each send `each` records at once, all to partition 0."""

    async def one(producer_number: int) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=False
        )
        await producer.start()
        try:
            sent = [
                await producer.send(topic, f"{producer_number}-{n}".encode(), partition=0)
                for n in range(each)
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    await asyncio.gather(*(one(number) for number in range(producers)))


def test_the_durable_store_keeps_every_concurrent_record_across_a_restart_of_both(
    tmp_path: Path,
) -> None:
    # Concurrent produces to one partition race for its high watermark; an S3 store that
    # ignored conditional writes (rclone's) let them overwrite each other's offsets.
    s3 = SeaweedS3(free_port(), tmp_path / "s3")
    broker = TansuBroker(
        free_port(), s3.storage_url, environment={**os.environ, **s3.client_environment()}
    )
    with s3, broker:
        asyncio.run(ensure_topics(broker.bootstrap_servers, ["raced"], partitions=1))
        asyncio.run(_produce_concurrently(broker.bootstrap_servers, "raced", 4, 250))
        asyncio.run(_commit_offset(broker.bootstrap_servers, "raced", "keeper", 640))
    with s3, broker:  # both stopped, then started on the same data directory
        values = asyncio.run(_consume_all(broker.bootstrap_servers, "raced", 1000))
        committed = asyncio.run(_committed_offset(broker.bootstrap_servers, "raced", "keeper"))
    assert sorted(values) == sorted(f"{p}-{n}".encode() for p in range(4) for n in range(250))
    assert committed == 640


async def _commit_offset(bootstrap_servers: str, topic: str, group: str, offset: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.commit({TopicPartition(topic, 0): offset})
    finally:
        await consumer.stop()


async def _committed_offset(bootstrap_servers: str, topic: str, group: str) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()


def test_a_reset_email_links_to_the_stacks_own_gateway() -> None:
    config = StackConfig(environment={}, ports=StackPorts(gateway=47300))
    variables = service_environment(config, resolve_endpoints(config))
    assert variables["NOTIFICATION_PASSWORD_RESET_URL"] == (
        "http://127.0.0.1:47300/reset-password?token="
    )


def test_the_stack_seals_reset_tokens_with_a_key_pair_kept_in_its_data_directory(
    tmp_path: Path,
) -> None:
    config = StackConfig(environment={}, data_dir=tmp_path)
    variables = service_environment(config, resolve_endpoints(config))
    opener = Opener.from_pem(variables["NOTIFICATION_SEALING_KEY"])
    assert variables["CHOREO_NOTIFICATION_KEY"] == opener.public_key
    kept = tmp_path / "event-keys" / "notification-sealing.pem"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    again = service_environment(config, resolve_endpoints(config))  # a restart
    assert again["CHOREO_NOTIFICATION_KEY"] == opener.public_key
    given = StackConfig(environment={"CHOREO_NOTIFICATION_KEY": "given"}, data_dir=tmp_path)
    assert "NOTIFICATION_SEALING_KEY" not in service_environment(given, resolve_endpoints(given))


def test_only_the_memory_broker_is_polled_fast() -> None:
    memory = StackConfig(environment={})
    durable = StackConfig(environment={}, durable_broker=True)
    given = StackConfig(environment={"KAFKA_FETCH_MAX_WAIT_MS": "100"})
    assert service_environment(memory, resolve_endpoints(memory))["KAFKA_FETCH_MAX_WAIT_MS"] == (
        str(kafka.FAST_FETCH_MAX_WAIT_MS)
    )
    assert "KAFKA_FETCH_MAX_WAIT_MS" not in service_environment(durable, resolve_endpoints(durable))
    assert service_environment(given, resolve_endpoints(given))["KAFKA_FETCH_MAX_WAIT_MS"] == "100"


def test_the_demo_catalog_is_seeded_once_through_the_gateway() -> None:
    products: list[dict[str, object]] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/auth/login":
            credentials = json.loads(request.content)
            if credentials != {"email": "admin@example.com", "password": "choreo-admin"}:
                return httpx.Response(401)
            return httpx.Response(200, json={"access_token": "admin-token"})
        if request.url.path == "/api/v1/products" and request.method == "GET":
            return httpx.Response(200, json={"items": products[:1], "next_cursor": None})
        if request.url.path == "/api/v1/products" and request.method == "POST":
            assert request.headers["Authorization"] == "Bearer admin-token"
            products.append(json.loads(request.content))
            return httpx.Response(201, json=products[-1])
        return httpx.Response(404)

    said: list[str] = []
    admin = ("admin@example.com", "choreo-admin")
    with httpx.Client(base_url="http://gateway", transport=httpx.MockTransport(gateway)) as client:
        assert seed_catalog(client, admin, said.append) == len(DEMO_PRODUCTS)
        assert seed_catalog(client, admin, said.append) == 0
        with pytest.raises(StackError, match="demo catalog"):
            seed_catalog(client, ("admin@example.com", "wrong"), said.append)
    assert len(products) == len(DEMO_PRODUCTS)
    assert all(isinstance(product["price"], int) for product in products)
    assert said[-1] == "the catalog has products already: demo catalog not seeded"
