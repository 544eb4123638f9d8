"""The inventory service run as a process on real PostgreSQL and the real broker, and helpers."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from choreo import records
from choreo.auth import SigningKey
from choreo.events import Event
from choreo.testing import Keyed, ServiceProcess, StartService, collect_events
from choreo.testing import records as make

USER_ID = str(uuid.uuid4())


@pytest.fixture
def inventory(start_service: StartService) -> ServiceProcess:
    return start_service("inventory")


@pytest.fixture
def admin_token(signing_key: SigningKey) -> str:
    return signing_key.issue(str(uuid.uuid4()), roles=["admin", "user"])


@pytest.fixture
def user_token(signing_key: SigningKey) -> str:
    return signing_key.issue(USER_ID, roles=["user"])


def product_body(**fields: Any) -> dict[str, Any]:
    """A valid product; `fields` override."""
    return {
        "name": "Burr grinder",
        "description": "Conical burrs, 40 settings.",
        "category": "kitchen",
        "price": 8900,
        "currency": "USD",
        "stock": 10,
        "low_stock_threshold": 2,
        "features": ["conical burrs", "40 settings"],
        "image_url": None,
        **fields,
    }


async def create_product(admin: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await admin.post("/api/v1/products", json=product_body(**fields))
    assert response.status_code == 201, response.text
    product: dict[str, Any] = response.json()
    return product


def order_created(
    order_id: str,
    lines: list[tuple[str, int]],
    *,
    key: str | None = None,
    deadline_in: timedelta = timedelta(minutes=15),
) -> Event[records.OrderCreated] | Keyed:
    """OrderCreated as the order service writes it; `key` overrides the Kafka key (order id)."""
    items = [records.OrderLine(product_id=p, quantity=q, unit_price=100) for p, q in lines]
    created = make.order_created(
        order_id=order_id,
        user_id=USER_ID,
        items=items,
        deadline=datetime.now(UTC) + deadline_in,
    )
    return created if key is None else Keyed(created, key)


def order_confirmed(order_id: str) -> Event[records.OrderConfirmed]:
    return make.order_confirmed(order_id=order_id, user_id=USER_ID, total_amount=100)


def order_cancelled(
    order_id: str, reason: str, *, previous_status: str = "RESERVED", key: str | None = None
) -> Event[records.OrderCancelled] | Keyed:
    cancelled = make.order_cancelled(
        order_id=order_id, user_id=USER_ID, reason=reason, previous_status=previous_status
    )
    return cancelled if key is None else Keyed(cancelled, key)


def payment_failed(order_id: str) -> Event[records.PaymentFailed]:
    return make.payment_failed(order_id=order_id, amount=100)


def about(
    events: list[Event[records.Record]], subject: str, *types: str
) -> list[Event[records.Record]]:
    """The events about an order or a product (of the given types, if any), in the order read."""
    return [e for e in events if _subject(e) == subject and (not types or e.type in types)]


def _subject(event: Event[records.Record]) -> str:
    return event.subject


async def stock_events(
    bootstrap: str, prefix: str, *wanted: tuple[str, str], timeout: float = 30.0
) -> list[Event[records.Record]]:
    """Everything read from `stock.updated` once each (subject, type) of `wanted` was seen.

    A pair given n times waits for n such events. Events of different keys may sit on different
    partitions, so wait for every event a test looks at, not only the last one it expects.
    """
    needed = Counter(wanted)

    def complete(events: list[Event[records.Record]]) -> bool:
        seen = Counter((_subject(e), e.type) for e in events)
        return all(seen[pair] >= n for pair, n in needed.items())

    return await collect_events(bootstrap, f"{prefix}stock.updated", complete, timeout=timeout)
