"""Kafka client factories (settings every part of Choreo relies on) and topic admin."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.structs import RecordMetadata

from choreo.errors import TransientError

log = logging.getLogger(__name__)

# How long a fetch may wait for records (Kafka's `fetch.max.wait.ms`, whose default this is).
# Apache Kafka answers as soon as records arrive. Tansu re-reads its storage at halving intervals
# within the wait, so there the wait bounds a saga hop's latency (bench/relay.py, memory storage:
# p50 commit -> consume 132 ms at 500 ms, 8 ms at 10 ms), and its S3 storage must also list a
# partition's objects, from the first, within the wait: what it has not listed when the wait
# runs out it does not return. On moto that listing takes ~130 ms per 1,000 objects, so at 20 ms
# a consumer stalls for good once a partition holds a few hundred (measured: 300 one-record
# batches, 0 fetched in 60 s at 20 ms, all in 0.7 s at 500 ms). The embedded memory broker has
# no listing, and `choreo up` runs its services with FAST_FETCH_MAX_WAIT_MS instead.
FETCH_MAX_WAIT_MS = 500
FAST_FETCH_MAX_WAIT_MS = 20


class BrokerUnavailableError(TransientError):
    """The broker could not be reached."""


def producer(bootstrap_servers: str, *, client_id: str = "choreo") -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica (`acks=all`).

    Idempotence stays off: Tansu does not implement idempotent producers, and the consumers'
    inbox makes redelivery harmless anyway. aiokafka keeps one batch in flight per partition,
    so records of one key are not reordered by retries.
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        linger_ms=2,
        max_batch_size=256 * 1024,
        request_timeout_ms=15_000,
        retry_backoff_ms=200,
    )


def consumer(
    bootstrap_servers: str,
    *,
    group_id: str,
    topics: Iterable[str] = (),
    client_id: str = "choreo",
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
) -> AIOKafkaConsumer:
    """A group consumer with manual commits that starts from the earliest unseen record.

    Without `topics` it subscribes to nothing: `choreo.consumer.Consumer` subscribes itself,
    with its rebalance listener.
    """
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_uncommitted",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        max_poll_interval_ms=300_000,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )


async def send_record(
    producer: AIOKafkaProducer,
    topic: str,
    *,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    partition: int | None = None,
) -> RecordMetadata:
    """Send any record Kafka can hold and wait for its acknowledgement.

    Without `partition`, the key decides it as usual. `AIOKafkaProducer.send` refuses a record
    with neither key nor value, which other clients can produce; such a record goes as a batch
    of its own, to `partition` or else partition 0.
    """
    if key is not None or value is not None:
        return await producer.send_and_wait(
            topic, value, key=key, headers=list(headers), partition=partition
        )
    batch = producer.create_batch()
    batch.append(key=None, value=None, timestamp=None, headers=list(headers))
    batch.close()
    return await (await producer.send_batch(batch, topic, partition=partition or 0))


async def ensure_topics(
    bootstrap_servers: str, names: Iterable[str], *, partitions: int = 6, timeout: float = 30.0
) -> list[str]:
    """Create the topics of `names` that are missing; return those created."""
    wanted = list(dict.fromkeys(names))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [n for n in wanted if n not in existing]
            if missing:
                new = [NewTopic(n, partitions, replication_factor=1) for n in missing]
                # Another process may create them first: that is as good.
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(new)
            return missing
    except (KafkaConnectionError, TimeoutError) as error:
        raise BrokerUnavailableError(f"broker {bootstrap_servers} unreachable: {error}") from error
    except KafkaError as error:
        message = f"topic admin on {bootstrap_servers} failed: {error}"
        raise BrokerUnavailableError(message) from error
    finally:
        await admin.close()


async def check_broker(bootstrap_servers: str, timeout: float = 2.0) -> None:
    """Readiness: raise unless the broker answers a metadata request within `timeout`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=2_000)
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            await admin.list_topics()
    finally:
        await admin.close()
