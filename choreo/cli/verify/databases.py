"""What `choreo verify` reads from the services' databases: one read-only connection each (the
server refuses any write), the outboxes first, then each database's facts in one REPEATABLE READ
snapshot. A database that cannot be read is named with the reason, never skipped silently."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import psycopg
from psycopg.rows import DictRow, dict_row
from sqlalchemy.engine import make_url

from choreo.db import sync_dsn

T = TypeVar("T")
Connection = psycopg.AsyncConnection[DictRow]

CONNECT_TIMEOUT = 5
"""Seconds to reach one database before it is reported unreachable."""
QUERY_TIMEOUT = 60.0
"""Seconds one database may take to answer every query of the audit."""


@dataclass(frozen=True)
class Outbox:
    service: str
    now: datetime
    """The database's clock when it was read."""
    backlog: int
    oldest_id: int | None
    oldest_topic: str | None
    oldest_created_at: datetime | None

    @property
    def oldest_age(self) -> float | None:
        if self.oldest_created_at is None:
            return None
        return (self.now - self.oldest_created_at).total_seconds()


@dataclass(frozen=True)
class Order:
    id: str
    user_id: str
    status: str
    cancel_reason: str | None
    total_amount: int
    currency: str
    deadline: datetime
    created_at: datetime
    updated_at: datetime
    confirmed_event_ids: tuple[str, ...]
    """The OrderConfirmed events the order service emitted for it (one, once confirmed)."""


@dataclass(frozen=True)
class Reservation:
    order_id: str
    status: str
    created_at: datetime


@dataclass(frozen=True)
class ProductStock:
    id: str
    name: str
    available: int
    reserved: int
    sold: int
    received: int
    """The sum of its stock adjustments: every unit admins ever added or took away."""
    held: int
    """Units on its lines of RESERVED reservations."""
    committed: int
    """Units on its lines of COMMITTED reservations."""


@dataclass(frozen=True)
class Payment:
    order_id: str
    status: str
    amount: int | None
    currency: str | None
    provider_payment_id: str | None
    refunded_amount: int
    cancelled: bool
    charging_intent: str | None
    """The intent of a charge started and not finished (status NONE with an attempt)."""
    created_at: datetime


@dataclass(frozen=True)
class NotificationFacts:
    confirmed_deliveries: Mapping[str, tuple[tuple[str, str], ...]]
    """OrderConfirmed event id -> (channel, status) of its order-confirmed deliveries (e-mail
    and SMS)."""
    unreachable_users: frozenset[str]
    """Users the service knows to have no e-mail address to write to (deleted, or none)."""
    order_update_channels: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """User id -> the channels outside the app (email, sms) chosen for order updates, for the
    users who changed their preferences; the others have the default, e-mail."""
    preferences_changed_at: Mapping[str, datetime] = field(default_factory=dict)
    """User id -> when those preferences were chosen."""


class ServiceDatabases:
    """A read-only connection to each service database; `errors` says which could not be had."""

    def __init__(self, urls: Mapping[str, str]) -> None:
        self.urls = dict(urls)
        self.connections: dict[str, Connection] = {}
        self.errors: dict[str, str] = {}

    def shown_url(self, service: str) -> str:
        return make_url(self.urls[service]).render_as_string(hide_password=True)

    async def open(self) -> None:
        async def connect(service: str) -> None:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT * 2):
                    connection = await psycopg.AsyncConnection.connect(
                        sync_dsn(self.urls[service]),
                        autocommit=True,
                        connect_timeout=CONNECT_TIMEOUT,
                        # The server itself refuses every write of this session.
                        options="-c default_transaction_read_only=on",
                        row_factory=dict_row,
                    )
                    await connection.set_read_only(True)
                    await connection.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
                    self.connections[service] = connection
            except (psycopg.Error, OSError, TimeoutError) as error:
                self.errors[service] = f"unreachable ({self.shown_url(service)}): {_reason(error)}"

        await asyncio.gather(*(connect(service) for service in self.urls))

    async def close(self) -> None:
        for connection in self.connections.values():
            await connection.close()

    async def read(
        self, service: str, reader: Callable[[Connection], Awaitable[T]], *, snapshot: bool = True
    ) -> T | None:
        """`reader`'s result on `service`'s database (in one REPEATABLE READ snapshot), or None
        with the reason in `errors`."""
        connection = self.connections.get(service)
        if connection is None:
            self.errors.setdefault(service, "no database URL")
            return None
        try:
            async with asyncio.timeout(QUERY_TIMEOUT):
                if not snapshot:
                    return await reader(connection)
                async with connection.transaction():
                    return await reader(connection)
        except psycopg.errors.UndefinedTable as error:
            self.errors[service] = f"{_reason(error)} (database not migrated?)"
        except (psycopg.Error, OSError, TimeoutError) as error:
            self.errors[service] = _reason(error)
        return None


async def _rows(connection: Connection, query: str, *parameters: object) -> list[DictRow]:
    async with connection.cursor() as cursor:
        await cursor.execute(query, parameters)
        return await cursor.fetchall()


def outbox_reader(service: str) -> Callable[[Connection], Awaitable[Outbox]]:
    async def read(connection: Connection) -> Outbox:
        (row,) = await _rows(
            connection,
            "SELECT now() AS now, count(*) AS backlog, min(id) AS oldest_id"
            " FROM outbox WHERE published_at IS NULL",
        )
        oldest = await _rows(
            connection, "SELECT topic, created_at FROM outbox WHERE id = %s", row["oldest_id"]
        )
        return Outbox(
            service,
            row["now"],
            row["backlog"],
            row["oldest_id"],
            oldest[0]["topic"] if oldest else None,
            oldest[0]["created_at"] if oldest else None,
        )

    return read


def orders_reader(since: datetime | None) -> Callable[[Connection], Awaitable[dict[str, Order]]]:
    """The orders placed since `since` (all of them without), with their OrderConfirmed ids."""

    async def read(connection: Connection) -> dict[str, Order]:
        rows = await _rows(
            connection,
            "SELECT o.id::text AS id, o.user_id::text AS user_id, o.status, o.cancel_reason,"
            " o.total_amount, o.currency, o.deadline, o.created_at, o.updated_at,"
            " coalesce(array_agg(t.event_id ORDER BY t.id) FILTER (WHERE t.event_id IS NOT NULL),"
            " '{}') AS confirmed_event_ids"
            " FROM orders o LEFT JOIN order_timeline t ON t.order_id = o.id"
            " AND t.direction = 'emitted' AND t.event_type = 'OrderConfirmed'"
            " WHERE %s::timestamptz IS NULL OR o.created_at >= %s"
            " GROUP BY o.id",
            since,
            since,
        )
        return {
            row["id"]: Order(**{**row, "confirmed_event_ids": tuple(row["confirmed_event_ids"])})
            for row in rows
        }

    return read


def known_orders_reader(ids: Collection[str]) -> Callable[[Connection], Awaitable[set[str]]]:
    """Which of `ids` the order service knows (whenever they were placed)."""

    async def read(connection: Connection) -> set[str]:
        rows = await _rows(
            connection, "SELECT id::text AS id FROM orders WHERE id::text = ANY(%s)", sorted(ids)
        )
        return {row["id"] for row in rows}

    return read


def reservations_reader(
    order_ids: Collection[str], since: datetime | None
) -> Callable[[Connection], Awaitable[tuple[dict[str, Reservation], list[ProductStock]]]]:
    """The reservations of `order_ids` and those made since `since` (all without), and every
    product's stock."""

    async def read(connection: Connection) -> tuple[dict[str, Reservation], list[ProductStock]]:
        rows = await _rows(
            connection,
            "SELECT order_id::text AS order_id, status, created_at FROM reservations"
            " WHERE %s::timestamptz IS NULL OR created_at >= %s OR order_id::text = ANY(%s)",
            since,
            since,
            sorted(order_ids),
        )
        products = await _rows(
            connection,
            "SELECT p.id::text AS id, p.name, p.available, p.reserved, p.sold,"
            " coalesce((SELECT sum(a.delta) FROM stock_adjustments a"
            "   WHERE a.product_id = p.id), 0) AS received,"
            " coalesce((SELECT sum(l.quantity) FROM reservation_lines l"
            "   JOIN reservations r ON r.order_id = l.order_id"
            "   WHERE l.product_id = p.id AND r.status = 'RESERVED'), 0) AS held,"
            " coalesce((SELECT sum(l.quantity) FROM reservation_lines l"
            "   JOIN reservations r ON r.order_id = l.order_id"
            "   WHERE l.product_id = p.id AND r.status = 'COMMITTED'), 0) AS committed"
            " FROM products p ORDER BY p.created_at, p.id",
        )
        return (
            {row["order_id"]: Reservation(**row) for row in rows},
            [ProductStock(**product) for product in products],
        )

    return read


def payments_reader(
    order_ids: Collection[str], since: datetime | None
) -> Callable[[Connection], Awaitable[dict[str, Payment]]]:
    """The payment rows of `order_ids` and those created since `since` (all without)."""

    async def read(connection: Connection) -> dict[str, Payment]:
        rows = await _rows(
            connection,
            "SELECT p.order_id::text AS order_id, p.status, p.amount, p.currency,"
            " p.provider_payment_id, p.refunded_amount, p.cancelled, p.created_at,"
            " CASE WHEN p.status = 'NONE' THEN a.provider_payment_id END AS charging_intent"
            " FROM order_payments p LEFT JOIN charge_attempts a ON a.order_id = p.order_id"
            " WHERE %s::timestamptz IS NULL OR p.created_at >= %s"
            " OR p.order_id::text = ANY(%s)",
            since,
            since,
            sorted(order_ids),
        )
        return {row["order_id"]: Payment(**row) for row in rows}

    return read


def notifications_reader(
    event_ids: Collection[str], user_ids: Collection[str]
) -> Callable[[Connection], Awaitable[NotificationFacts]]:
    """The order-confirmed deliveries of `event_ids`, and which of `user_ids` cannot be e-mailed."""

    async def read(connection: Connection) -> NotificationFacts:
        deliveries = await _rows(
            connection,
            "SELECT event_id, channel, status FROM deliveries"
            " WHERE kind = 'order_confirmed' AND event_id = ANY(%s)",
            sorted(event_ids),
        )
        preferences = await _rows(
            connection,
            "SELECT user_id, channels -> 'order_updates' AS chosen, changed_at FROM preferences"
            " WHERE user_id = ANY(%s)",
            sorted(user_ids),
        )
        contacts = await _rows(
            connection,
            "SELECT user_id FROM contacts WHERE user_id = ANY(%s)"
            " AND (email IS NULL OR deleted_at IS NOT NULL)",
            sorted(user_ids),
        )
        statuses: dict[str, list[tuple[str, str]]] = {}
        for row in deliveries:
            statuses.setdefault(row["event_id"], []).append((row["channel"], row["status"]))
        chosen = {
            row["user_id"]: frozenset(
                channel
                for channel, default in (("email", True), ("sms", False))
                if (row["chosen"] or {}).get(channel, default)
            )
            for row in preferences
        }
        return NotificationFacts(
            {event_id: tuple(found) for event_id, found in statuses.items()},
            frozenset(row["user_id"] for row in contacts),
            chosen,
            {row["user_id"]: row["changed_at"] for row in preferences},
        )

    return read


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
