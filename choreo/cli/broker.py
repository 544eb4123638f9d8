"""The broker as the inspection commands see it: a connection that fails fast, the topics under
a prefix, offsets, consumer groups, and reading partitions without joining any group (so that
looking never moves a service's offsets)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Self, TypeAlias

from aiokafka import (
    AIOKafkaClient,
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError

from choreo import kafka
from choreo.cli.options import kafka_security, physical_topic
from choreo.cli.output import CliError

CONNECT_TIMEOUT = 5.0
"""Seconds to reach the broker before a command gives up."""
STALL_TIMEOUT = 15.0
"""Seconds a bounded read may go without a record before it is reported as stuck."""
_FETCH_MS = 200
_BUFFERED_PER_PARTITION = 1000

Record: TypeAlias = ConsumerRecord[bytes, bytes]


class Broker:
    """A short-lived connection for one command: `async with Broker(servers, prefix) as b:`.

    It reaches the broker with `security`, by default the environment's (`kafka_security`).
    A follower that must see records soon (`choreo bench`) asks for a short fetch wait.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        prefix: str = "",
        security: kafka.KafkaSecurity | None = None,
        *,
        fetch_max_wait_ms: int = kafka.FETCH_MAX_WAIT_MS,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.prefix = prefix
        self.security = kafka_security() if security is None else security
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._client = AIOKafkaClient(
            bootstrap_servers=bootstrap_servers,
            client_id="choreo-cli",
            request_timeout_ms=int(CONNECT_TIMEOUT * 1000),
            **self.security.client_options(),
        )
        self._reader = self._new_consumer(None)
        self._partitions: dict[str, list[TopicPartition]] = {}

    def _new_consumer(self, group_id: str | None) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id="choreo-cli",
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            request_timeout_ms=int(CONNECT_TIMEOUT * 1000) + 5_000,
            **self.security.client_options(),
        )

    async def __aenter__(self) -> Self:
        try:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await self._client.bootstrap()
                    await self._reader.start()
            except (KafkaConnectionError, TimeoutError, OSError, *kafka.SCRAM_REFUSALS) as error:
                problem = await kafka.connection_problem(self.bootstrap_servers, self.security)
                raise self.unreachable(error, problem) from None
            await self.refresh()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        await self._reader.stop()
        await self._client.close()

    def unreachable(
        self, error: BaseException | None = None, problem: str | None = None
    ) -> CliError:
        """The error of a broker that cannot be used; `problem` names a TLS or SASL failure."""
        if problem is not None:
            return CliError(f"broker {self.bootstrap_servers} unreachable: {problem}")
        if isinstance(error, TimeoutError):
            reason = f"no answer in {CONNECT_TIMEOUT:g} s"
        elif isinstance(error, KafkaConnectionError | OSError):
            reason = "cannot connect"
        else:
            reason = str(error) or type(error).__name__
        return CliError(
            f"broker {self.bootstrap_servers} unreachable ({reason}); is `choreo up` running, "
            "and KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers right?"
        )

    async def refresh(self) -> None:
        """Read the topics and their partitions afresh."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                cluster = await self._client.fetch_all_metadata()
        except (KafkaError, TimeoutError) as error:
            raise self.unreachable(error) from None
        self._partitions = {
            topic: [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic))]
            for topic in cluster.topics()
        }

    def topics(self) -> list[str]:
        """The topics under the prefix, without the broker's internal ones (`__*`)."""
        return sorted(
            topic
            for topic in self._partitions
            if topic.startswith(self.prefix) and not topic.startswith("__")
        )

    def require_topic(self, name: str) -> str:
        """The physical name of topic `name` (with or without the prefix); fails if missing."""
        topic = physical_topic(name, self.prefix)
        if topic not in self._partitions:
            where = f" under prefix {self.prefix!r}" if self.prefix else ""
            raise CliError(
                f"no topic {topic} on {self.bootstrap_servers}{where}; `choreo topics` lists them"
            )
        return topic

    def partitions(self, *topics: str) -> list[TopicPartition]:
        return [tp for topic in topics for tp in self._partitions.get(topic, [])]

    async def offsets(
        self, partitions: Iterable[TopicPartition]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """The beginning and end offsets of `partitions`."""
        wanted = list(partitions)
        if not wanted:
            return {}, {}
        beginning = await self._reader.beginning_offsets(wanted)
        reported = await self._reader.end_offsets(wanted)
        return dict(beginning), await self._log_ends(dict(reported))

    async def _log_ends(self, reported: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The end offset of each partition as fetch responses give it (the high watermark).

        Tansu answers ListOffsets(latest) with the base offset of the partition's last batch
        plus one: short by the batch's other records. A fetch's high watermark is right on
        every broker, so each partition is fetched once from the reported end.
        """
        self._assign(reported, reported)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT
        while True:
            highwater = {tp: self._reader.highwater(tp) for tp in reported}
            if all(offset is not None for offset in highwater.values()):
                return {tp: max(reported[tp], highwater[tp]) for tp in reported}
            if loop.time() > deadline:
                raise self.unreachable(TimeoutError())
            await self._reader.getmany(timeout_ms=kafka.FETCH_MAX_WAIT_MS)

    async def read(
        self, start: Mapping[TopicPartition, int], end: Mapping[TopicPartition, int]
    ) -> AsyncIterator[Record]:
        """The records from `start` up to (not including) `end` of each partition, merged
        across partitions (and topics) in timestamp order."""
        pending = {tp for tp, offset in start.items() if offset < end.get(tp, 0)}
        if not pending:
            return
        self._assign(pending, start)
        buffers: dict[TopicPartition, deque[Record]] = {tp: deque() for tp in pending}
        fetched: set[TopicPartition] = set()  # everything up to `end` is in its buffer
        while True:
            last_progress = time.monotonic()
            while starving := [tp for tp in pending - fetched if not buffers[tp]]:
                self._reader.resume(*starving)
                batch = await self._reader.getmany(timeout_ms=_FETCH_MS)
                for tp, records in batch.items():
                    buffers[tp].extend(r for r in records if r.offset < end[tp])
                    last_progress = time.monotonic()
                for tp in pending - fetched:
                    if await self._reader.position(tp) >= end[tp]:
                        fetched.add(tp)
                        self._reader.pause(tp)
                    elif len(buffers[tp]) >= _BUFFERED_PER_PARTITION:
                        self._reader.pause(tp)
                if time.monotonic() - last_progress > STALL_TIMEOUT:
                    where = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in starving)
                    raise CliError(f"reading {where} stalled: no record in {STALL_TIMEOUT:g} s")
            heads = [tp for tp in pending if buffers[tp]]
            if not heads:
                return
            first = min(heads, key=lambda tp: _order(buffers[tp][0]))
            yield buffers[first].popleft()

    async def follow(
        self, start: Mapping[TopicPartition, int], stop: asyncio.Event
    ) -> AsyncIterator[Record]:
        """Records from `start` on as they arrive, until `stop` is set."""
        self._assign(start, start)
        while not stop.is_set():
            batch = await self._reader.getmany(timeout_ms=_FETCH_MS)
            records = [record for records in batch.values() for record in records]
            for record in sorted(records, key=_order):
                yield record

    async def record_at(self, tp: TopicPartition, offset: int) -> Record | None:
        """The record at `offset` of `tp`, or None when there is none."""
        if tp.topic not in self._partitions or tp not in self._partitions[tp.topic]:
            return None
        beginning, end = await self.offsets([tp])
        if not beginning[tp] <= offset < end[tp]:
            return None
        async for record in self.read({tp: offset}, {tp: offset + 1}):
            if record.offset == offset:
                return record
        return None

    @contextlib.asynccontextmanager
    async def producer(self) -> AsyncIterator[AIOKafkaProducer]:
        """A producer on this broker (`acks=all`), started within the connect timeout."""
        producer = kafka.producer(
            self.bootstrap_servers, client_id="choreo-cli", security=self.security
        )
        try:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await producer.start()
            except (KafkaConnectionError, TimeoutError, OSError) as error:
                raise self.unreachable(error) from None
            yield producer
        finally:
            await producer.stop()

    def _assign(
        self, partitions: Iterable[TopicPartition], start: Mapping[TopicPartition, int]
    ) -> None:
        assigned = list(partitions)
        self._reader.assign(assigned)
        for tp in assigned:
            self._reader.seek(tp, start[tp])

    async def consumer_groups(self) -> list[str] | None:
        """The consumer groups under the prefix, or None when the broker cannot list them."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id="choreo-cli",
            request_timeout_ms=int(CONNECT_TIMEOUT * 1000),
            **self.security.client_options(),
        )
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT * 2):
                await admin.start()
                listed = await admin.list_consumer_groups()
        except (KafkaError, TimeoutError):
            return None
        finally:
            await admin.close()
        return sorted(
            group
            for group, protocol in listed
            if group.startswith(self.prefix) and protocol in ("consumer", "")
        )

    async def committed(
        self, group: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        """The offsets `group` committed on `partitions` (None where it committed none).

        Read by a consumer of that group that never subscribes, so it never joins the group
        and cannot trigger a rebalance of the members that are running.
        """
        wanted = list(partitions)
        reader = self._new_consumer(group)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT * 2):
                await reader.start()
                found = await asyncio.gather(*(reader.committed(tp) for tp in wanted))
        except (KafkaConnectionError, TimeoutError) as error:
            raise self.unreachable(error) from None
        finally:
            await reader.stop()
        return dict(zip(wanted, found, strict=True))


def _order(record: Record) -> tuple[int, str, int, int]:
    return (record.timestamp, record.topic, record.partition, record.offset)
