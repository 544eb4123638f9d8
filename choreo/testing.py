"""Pytest fixtures every package's tests import: real PostgreSQL and a real broker, once per run.

Enable with `pytest_plugins = ["choreo.testing"]` in a conftest. Each test gets a fresh
database and its own topic prefix, so tests never see each other's rows or records.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from choreo import kafka
from choreo.events import DLQ_TOPICS, EVENT_TOPICS
from choreo.stack.broker import TansuBroker
from choreo.stack.postgres import EmbeddedPostgres


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL server for the whole test run."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data", free_port())
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
    names = [f"{topic_prefix}{t}" for t in (*EVENT_TOPICS, *DLQ_TOPICS)]
    await kafka.ensure_topics(kafka_bootstrap, names, partitions=3)
    yield topic_prefix


def repository_root() -> Path:
    return Path(__file__).resolve().parent.parent
