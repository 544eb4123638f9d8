"""Each service's own view of one order, read from its database: what `choreo saga` shows
next to the events. Read-only, one short connection per database; a database that cannot be
reached or a table that is missing is reported in the view, never fatal."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from sqlalchemy.engine import make_url

from choreo.db import sync_dsn

CONNECT_TIMEOUT = 5
"""Seconds to reach one database before its view says it is unreachable."""

BY_EVENT_ID = "event_id"
"""A query matched against the ids of the order's events rather than the order id."""


@dataclass(frozen=True)
class Query:
    table: str
    by: str
    """The column holding the order id (or the event id, for BY_EVENT_ID)."""
    shown: tuple[str, ...]
    """The columns worth a person's attention (JSON has every column)."""
    order_by: str | None = None
    single: bool = False
    """At most one row per order: shown as facts rather than a table."""


# What each service keeps about an order (see each service's tables.py). The first query of a
# service finds the order itself there; the others add detail.
QUERIES: Mapping[str, tuple[Query, ...]] = {
    "order": (
        Query(
            "orders",
            "id",
            (
                "status",
                "cancel_reason",
                "total_amount",
                "currency",
                "charged",
                "user_id",
                "payment_method_id",
                "deadline",
                "created_at",
                "updated_at",
            ),
            single=True,
        ),
        Query(
            "order_items",
            "order_id",
            ("line_number", "product_id", "name", "quantity", "unit_price"),
            order_by="line_number",
        ),
        Query(
            "order_timeline",
            "order_id",
            ("occurred_at", "direction", "event_type", "source", "summary"),
            order_by="id",
        ),
    ),
    "inventory": (
        Query(
            "reservations",
            "order_id",
            ("status", "reason", "created_at", "updated_at"),
            single=True,
        ),
        Query("reservation_lines", "order_id", ("product_id", "quantity"), order_by="product_id"),
    ),
    "payment": (
        Query(
            "order_payments",
            "order_id",
            (
                "status",
                "no_charge_reason",  # why an EXPIRED order was never charged
                "deadline",
                "amount",
                "currency",
                "payment_id",
                "provider_payment_id",
                "decline_code",
                "failure_message",
                "charged_at",
                "refund_id",
                "provider_refund_id",
                "refunded_amount",
                "refunded_at",
                "order_known",
                "stock_reserved",
                "cancelled",
            ),
            single=True,
        ),
        Query(
            "charge_attempts",
            "order_id",
            ("provider_payment_id", "provider_payment_method_id", "created_at"),
            single=True,
        ),
        Query(
            "risk_assessments",
            "order_id",
            (
                "decision",
                "score",
                "reasons",
                "counters",
                "assessed_at",
                "review_status",
                "review_expires_at",
                "review_closed_at",
                "review_closed_by",
            ),
            single=True,
        ),
    ),
    "notification": (
        Query(
            "orders",
            "order_id",
            ("user_id", "total", "currency", "item_count", "created_at"),
            single=True,
        ),
        Query(
            "order_cancellations",
            "order_id",
            ("reason", "cancelled_at"),
            single=True,
        ),
        Query(
            "deliveries",
            BY_EVENT_ID,
            (
                "kind",
                "recipient",
                "status",
                "attempts",
                "last_error",
                "provider_message_id",
                "sent_at",
            ),
            order_by="claimed_at",
        ),
        Query(
            "notifications",
            BY_EVENT_ID,
            ("kind", "user_id", "title", "created_at", "read_at"),
            order_by="created_at",
        ),
    ),
}


@dataclass
class ServiceView:
    service: str
    database: str
    """Its URL, without a password."""
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    """Table name to why it could not be read (missing, say)."""
    error: str | None = None
    """Why the database could not be read at all."""

    @property
    def knows_order(self) -> bool:
        first = QUERIES[self.service][0].table
        return bool(self.rows.get(first))

    def to_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "error": self.error,
            "found": self.knows_order,
            "tables": self.rows,
            "problems": self.problems,
        }


async def service_views(
    database_urls: Mapping[str, str], order_id: str, event_ids: Collection[str]
) -> list[ServiceView]:
    """The view of every service of QUERIES that has a database URL, read concurrently."""
    services = [s for s in QUERIES if s in database_urls]
    return list(
        await asyncio.gather(
            *(read_view(s, database_urls[s], order_id, event_ids) for s in services)
        )
    )


async def read_view(
    service: str, database_url: str, order_id: str, event_ids: Collection[str]
) -> ServiceView:
    shown_url = make_url(database_url).render_as_string(hide_password=True)
    result = ServiceView(service, shown_url)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT * 2):
            connection = await psycopg.AsyncConnection.connect(
                sync_dsn(database_url), autocommit=True, connect_timeout=CONNECT_TIMEOUT
            )
    except (psycopg.Error, OSError, TimeoutError) as error:
        result.error = f"unreachable: {_first_line(error) or 'no answer'}"
        return result
    async with connection:
        for query in QUERIES[service]:
            try:
                result.rows[query.table] = await _rows(connection, query, order_id, event_ids)
            except psycopg.errors.UndefinedTable:
                result.problems[query.table] = "no such table (database not migrated?)"
            except psycopg.Error as error:
                result.problems[query.table] = _first_line(error)
    return result


async def _rows(
    connection: psycopg.AsyncConnection[Any],
    query: Query,
    order_id: str,
    event_ids: Collection[str],
) -> list[dict[str, Any]]:
    if query.by == BY_EVENT_ID:
        if not event_ids:
            return []
        condition = sql.SQL("{} = ANY(%s)").format(sql.Identifier(query.by))
        parameter: object = sorted(event_ids)
    else:
        condition = sql.SQL("{} = %s").format(sql.Identifier(query.by))
        parameter = order_id
    statement = sql.SQL("SELECT * FROM {} WHERE {}").format(sql.Identifier(query.table), condition)
    if query.order_by:
        statement += sql.SQL(" ORDER BY {}").format(sql.Identifier(query.order_by))
    async with connection.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(statement, (parameter,))
        return await cursor.fetchall()


def shown_columns(query: Query, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The columns of `query.shown` the rows actually have (tables change under us)."""
    present = set().union(*(row.keys() for row in rows)) if rows else set()
    return [column for column in query.shown if column in present]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
