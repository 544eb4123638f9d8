"""The transactional outbox: its table, the writer used inside a unit of work, and the relay.

The relay is the only thing that moves outbox rows to Kafka. One relay per database is active
at a time (a PostgreSQL advisory lock held on its own connection; when that connection dies the
lock passes to another replica), so rows leave in id order and each key keeps its order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import psycopg
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata
from prometheus_client import Counter, Gauge, Histogram
from psycopg.types.json import Jsonb

from choreo.avro import SchemaStore
from choreo.events import Event, headers_of
from choreo.listener import Notifications
from choreo.logs import note_published
from choreo.records import Record
from choreo.signing import SIGNATURE_HEADER, EventSigner
from choreo.tables import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

EndOffsets = Callable[[Sequence[TopicPartition]], Awaitable[Mapping[TopicPartition, int]]]
"""Where each partition's log ends now, the offset its next record takes
(`choreo.kafka.end_offsets`)."""
LOG_ENDS_TIMEOUT_SECONDS = 10.0
"""How long a relay that becomes active waits for the broker to say where its logs end."""

PUBLISHED = Counter("choreo_relay_published_total", "Outbox rows published", ["relay"])
BATCH_SECONDS = Histogram(
    "choreo_relay_batch_seconds", "Time to publish and mark one relay batch", ["relay"]
)
REPUBLISHED = Counter(
    "choreo_relay_republished_total",
    "Outbox rows published again because the broker lost its log",
    ["relay"],
)
ACTIVE = Gauge("choreo_relay_active", "1 while this process holds the relay lock", ["relay"])
BACKLOG = Gauge(
    "choreo_outbox_unpublished_rows",
    "Outbox rows not yet published, as the active relay last counted them",
    ["relay"],
)


class OutboxWriter:
    """Encodes events (Avro single-object, CloudEvents headers) into outbox rows, signed with
    the service's key when it has one (choreo.signing)."""

    def __init__(
        self,
        store: SchemaStore,
        source: str,
        topic_name: Callable[[str], str] = str,
        signer: EventSigner | None = None,
    ) -> None:
        self._store = store
        self._source = source
        self._topic_name = topic_name
        self._signer = signer

    def row(self, event: Event[Record]) -> dict[str, object]:
        if not event.source:
            event = dataclasses.replace(event, source=self._source)
        value = self._store.encode(event.type, event.record.to_avro())
        headers = headers_of(event)
        if self._signer is not None:
            headers[SIGNATURE_HEADER] = self._signer.sign(event.topic, headers, value)
        return {
            "topic": self._topic_name(event.topic),
            "key": event.subject,
            "value": value,
            "headers": headers,
        }

    async def write(
        self,
        connection: psycopg.AsyncConnection[tuple[object, ...]],
        events: Sequence[Event[Record]],
    ) -> None:
        """Insert the rows of `events` in the connection's transaction, in order: one
        multi-row INSERT, whose VALUES PostgreSQL inserts in list order, each taking the next
        id of the table's sequence as it goes. One statement costs ~45 µs of client CPU where
        psycopg's executemany (a pipeline) cost ~80 µs even for one row (measured with
        psycopg on this machine, issue 14)."""
        note_published(event.type for event in events)
        values: list[object] = []
        for event in events:
            row = self.row(event)
            values += (row["topic"], row["key"], row["value"], Jsonb(row["headers"]))
        await connection.execute(_insert_rows(len(events)), values)


@functools.lru_cache(maxsize=64)
def _insert_rows(count: int) -> str:
    """`INSERT INTO outbox ... VALUES (%s, ...), ...` for `count` rows (one per event)."""
    rows = ", ".join(["(%s, %s, %s, %s)"] * count)
    return f"INSERT INTO outbox (topic, key, value, headers) VALUES {rows}"


@dataclass(frozen=True)
class _Row:
    id: int
    topic: str
    key: str
    value: bytes
    headers: dict[str, str]


def relay_lock_key(database: str) -> int:
    """The advisory-lock key that elects one relay per database."""
    return zlib.crc32(f"choreo-relay:{database}".encode())


class Relay:
    """Publishes outbox rows to Kafka in id order, in batches, marking them after the ack."""

    def __init__(
        self,
        conninfo: str,
        producer: AIOKafkaProducer,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        lock_retry_interval: float = 1.0,
        retention_seconds: float = 24 * 3600,
        republish_window_seconds: float = 900.0,
        backlog_interval_seconds: float = 10.0,
        name: str = "relay",
        end_offsets: EndOffsets | None = None,
    ) -> None:
        """Published rows are kept `retention_seconds` (for `choreo saga` and audits). When
        the broker acknowledges a record at an offset below one it acknowledged before on the
        same partition, its log was lost (a broker back empty, a re-created topic): the rows
        published in the last `republish_window_seconds` are published again.

        With `end_offsets` (where each partition's log ends now, asked of the broker), a
        relay that becomes active also compares the broker's log ends with the ones it
        recorded, and refills a lost log at once instead of at its next publish (a service
        that publishes nothing for a while would otherwise refill nothing meanwhile, and the
        first event after a broker restart waits behind the whole refill).

        The active relay counts the rows still unpublished after a batch at most every
        `backlog_interval_seconds` (the backlog gauge; Prometheus scrapes every 15 s), so a
        relay that runs hot adds no query per batch."""
        self._conninfo = conninfo
        self._producer = producer
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._lock_retry_interval = lock_retry_interval
        self._name = name
        self._retention_seconds = retention_seconds
        self._republish_window_seconds = republish_window_seconds
        self._backlog_interval_seconds = backlog_interval_seconds
        self._end_offsets = end_offsets
        self._next_backlog_count = 0.0
        self._log_ends: dict[TopicPartition, int] = {}  # highest offset acknowledged so far
        self._next_cleanup = 0.0
        self._stopping = asyncio.Event()
        self._last_read_ids: set[int] = set()
        self._read_ids: set[int] = set()
        self.published = 0
        self.reads = 0  # reads of the outbox's unpublished rows, found empty or not

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Hold the relay lock and publish until `stop()`; reconnect and re-elect on failure."""
        while not self._stopping.is_set():
            try:
                await self._run_once()
            except (psycopg.OperationalError, OSError) as error:
                ACTIVE.labels(self._name).set(0)
                log.warning("relay %s lost its database connection: %s", self._name, error)
                await self._sleep(self._lock_retry_interval)

    async def _run_once(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        async with conn:
            # The relay's writes (a batch marked published, the log ends, a republish) need not
            # wait for their WAL to reach disk: one lost in a crash of PostgreSQL leaves rows
            # unpublished, which are sent again and which consumers skip by their inbox. The
            # rows themselves were written by the services' transactions, which do wait; and
            # any later commit that waits flushes the WAL written before it (PostgreSQL,
            # "Asynchronous Commit"). Each mark so costs its backend ~100-170 us less CPU and
            # the relay ~0.7-1.5 ms less wait before its next read (issue 14).
            await conn.execute("SET synchronous_commit = off")
            database = conn.info.dbname
            while not await self._try_lock(conn, database):
                if await self._sleep(self._lock_retry_interval):
                    return
            ACTIVE.labels(self._name).set(1)
            self._next_backlog_count = 0.0
            log.info("relay %s is the active relay of database %s", self._name, database)
            cursor = await conn.execute("SELECT topic, partition, end_offset FROM outbox_log_ends")
            self._log_ends = {TopicPartition(t, p): o for t, p, o in await cursor.fetchall()}
            await self._check_log_ends(conn)
            try:
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                notifications = Notifications(conn)
                while not self._stopping.is_set():
                    published = await self._publish_batch(conn)
                    await self._count_backlog(conn)
                    if published < self._batch_size:
                        await self._delete_expired(conn)
                        await self._wait_for_rows(notifications)
            finally:
                ACTIVE.labels(self._name).set(0)
                # The next active relay, perhaps another replica's, reports the backlog.
                with contextlib.suppress(KeyError):
                    BACKLOG.remove(self._name)

    async def _try_lock(self, conn: psycopg.AsyncConnection[tuple[object, ...]], db: str) -> bool:
        cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (relay_lock_key(db),))
        row = await cursor.fetchone()
        return bool(row and row[0])

    async def _wait_for_rows(self, notifications: Notifications) -> None:
        """Sleep until a commit NOTIFYs rows not read yet, the poll interval passes (fallback),
        or stop()."""
        waiter = asyncio.ensure_future(self._stopping.wait())
        notified = asyncio.ensure_future(self._next_notify(notifications))
        try:
            await asyncio.wait(
                {waiter, notified},
                timeout=self._poll_interval,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (waiter, notified):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                await notified

    async def _next_notify(self, notifications: Notifications) -> None:
        """The next notification that may announce rows not read yet.

        Each outbox INSERT notifies, at its commit, the highest id it wrote. A commit that
        raced the last read (committed before it, its notification received during or after
        it) names an id that read returned: it is dropped instead of waking the relay for a
        read that finds nothing (~2 such reads per saga over the four relays, issue 14). A
        notification naming no id (a database not migrated yet) always wakes the relay."""
        while True:
            notify = await notifications.next()
            if not notify.payload.isdigit() or int(notify.payload) not in self._read_ids:
                return

    async def _publish_batch(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> int:
        started = time.perf_counter()
        cursor = await conn.execute(
            "SELECT id, topic, key, value, headers FROM outbox"
            " WHERE published_at IS NULL ORDER BY id LIMIT %s",
            (self._batch_size,),
        )
        rows = [_Row(*r) for r in await cursor.fetchall()]  # type: ignore[arg-type]
        self.reads += 1
        # The ids of this read and the one before: a notification naming one of them is
        # stale (`_next_notify`); it arrives at the latest while the next batch is published.
        self._read_ids = self._last_read_ids | {row.id for row in rows}
        self._last_read_ids = {row.id for row in rows}
        if not rows:
            return 0
        sent = [
            await self._producer.send(
                row.topic,
                value=row.value,
                key=row.key.encode(),
                headers=[(k, v.encode()) for k, v in row.headers.items()],
            )
            for row in rows
        ]
        results = await asyncio.gather(*sent, return_exceptions=True)
        acked = _acknowledged_prefixes(rows, results)
        acknowledged = [r for r in results if isinstance(r, RecordMetadata)]
        if self._log_lost(acknowledged):
            if acked:
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY(%s)", (acked,)
                )
            await conn.execute("DELETE FROM outbox_log_ends")
            await self._republish_recent(conn)
            await self._remember_log_ends(conn, acknowledged)
        elif acknowledged:
            await self._remember_log_ends(conn, acknowledged, marking=acked)
        self.published += len(acked)
        PUBLISHED.labels(self._name).inc(len(acked))
        BATCH_SECONDS.labels(self._name).observe(time.perf_counter() - started)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            log.warning("relay %s: broker refused part of a batch: %s", self._name, failure)
            await self._sleep(self._lock_retry_interval)
            return 0
        return len(rows)

    async def _count_backlog(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        """Now and then, count the unpublished rows (through the partial index of unpublished
        ids, `outbox_unpublished`: the cost grows with the backlog, not the table)."""
        if time.monotonic() < self._next_backlog_count:
            return
        self._next_backlog_count = time.monotonic() + self._backlog_interval_seconds
        cursor = await conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        row = await cursor.fetchone()
        BACKLOG.labels(self._name).set(row[0] if row and isinstance(row[0], int) else 0)

    async def _check_log_ends(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        """On becoming active: a partition whose log now ends at or below the highest offset
        acknowledged there before lost its records; refill every log (as `_log_lost` does
        when an acknowledgement shows it). When the broker cannot say (unreachable, a topic
        not created yet), the acknowledgements of the next publish still will."""
        if self._end_offsets is None or not self._log_ends:
            return
        try:
            async with asyncio.timeout(LOG_ENDS_TIMEOUT_SECONDS):
                ends = await self._end_offsets(list(self._log_ends))
        except (KafkaError, OSError, TimeoutError) as error:
            log.warning(
                "relay %s: could not ask the broker where its logs end (%s): a lost log is "
                "noticed at the next publish",
                self._name,
                type(error).__name__,
            )
            return
        shrunk = {
            tp: ends[tp]
            for tp, recorded in self._log_ends.items()
            if tp in ends and ends[tp] <= recorded
        }
        if not shrunk:
            return
        for tp, end in shrunk.items():
            log.error(
                "relay %s: %s[%d] ends at offset %d, at or below the %d acknowledged before:"
                " the broker lost its log",
                self._name,
                tp.topic,
                tp.partition,
                end,
                self._log_ends[tp],
            )
        self._log_ends = {}
        await conn.execute("DELETE FROM outbox_log_ends")
        await self._republish_recent(conn)

    def _log_lost(self, acknowledged: Sequence[RecordMetadata]) -> bool:
        """Whether a partition's log restarted below what this relay wrote to it before: an
        offset acknowledged now at or below the last one acknowledged there."""
        lowest: dict[TopicPartition, int] = {}
        highest: dict[TopicPartition, int] = {}
        for metadata in acknowledged:
            tp = metadata.topic_partition
            lowest[tp] = min(lowest.get(tp, metadata.offset), metadata.offset)
            highest[tp] = max(highest.get(tp, metadata.offset), metadata.offset)
        shrunk = [tp for tp, low in lowest.items() if low <= self._log_ends.get(tp, -1)]
        for tp in shrunk:
            log.error(
                "relay %s: %s[%d] acknowledged offset %d, at or below the %d acknowledged before:"
                " the broker lost its log",
                self._name,
                tp.topic,
                tp.partition,
                lowest[tp],
                self._log_ends[tp],
            )
        if shrunk:
            # What was written before the loss says nothing about the new log.
            self._log_ends = highest
        else:
            self._log_ends.update(highest)
        return bool(shrunk)

    async def _remember_log_ends(
        self,
        conn: psycopg.AsyncConnection[tuple[object, ...]],
        acknowledged: Sequence[RecordMetadata],
        *,
        marking: Sequence[int] = (),
    ) -> None:
        """Keep `_log_ends` in the database, so a relay that starts later knows them too;
        in the same statement, mark the rows `marking` (ids) published: one round trip and one
        commit per batch instead of two (an autocommit statement is atomic either way)."""
        ends = {m.topic_partition: self._log_ends[m.topic_partition] for m in acknowledged}
        if not ends:
            return
        await conn.execute(
            "WITH marked AS (UPDATE outbox SET published_at = now() WHERE id = ANY(%s::bigint[]))"
            " INSERT INTO outbox_log_ends (topic, partition, end_offset)"
            " SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[])"
            " ON CONFLICT (topic, partition) DO UPDATE"
            " SET end_offset = excluded.end_offset, updated_at = now()",
            (
                list(marking),
                [tp.topic for tp in ends],
                [tp.partition for tp in ends],
                list(ends.values()),
            ),
        )

    async def _republish_recent(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        """Publish again, in id order, what the lost log may have held and no consumer may
        have read yet; consumers skip what they had applied (inbox)."""
        cursor = await conn.execute(
            "UPDATE outbox SET published_at = NULL"
            " WHERE published_at > now() - make_interval(secs => %s)",
            (self._republish_window_seconds,),
        )
        REPUBLISHED.labels(self._name).inc(cursor.rowcount)
        log.error(
            "relay %s: publishing again the %d row(s) published in the last %g s",
            self._name,
            cursor.rowcount,
            self._republish_window_seconds,
        )

    async def _delete_expired(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        """Now and then, when idle, drop rows published longer ago than the retention."""
        if time.monotonic() < self._next_cleanup:
            return
        self._next_cleanup = time.monotonic() + 60.0
        await conn.execute(
            "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => %s)",
            (self._retention_seconds,),
        )

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped first; True when stop() was called."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()


def _acknowledged_prefixes(rows: Sequence[_Row], results: Sequence[object]) -> list[int]:
    """Ids safe to mark published: per key, the rows acked before that key's first failure.

    A later row of a key whose earlier row failed stays unpublished, so the next batch sends
    both again in order (consumers drop the duplicate by `ce_id`).
    """
    failed_keys: set[tuple[str, str]] = set()
    acked: list[int] = []
    for row, result in zip(rows, results, strict=True):
        stream = (row.topic, row.key)
        if isinstance(result, BaseException) or stream in failed_keys:
            failed_keys.add(stream)
        else:
            acked.append(row.id)
    return acked
