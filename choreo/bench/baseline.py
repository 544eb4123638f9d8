"""The synchronous baseline: the saga's work (price lookup, reserve, charge at the Stripe
emulator, confirm, the e-mails to the SendGrid sink) as one HTTP request that does each step in
turn, on scratch databases of the same PostgreSQL, with no broker and no outbox. Driven
closed-loop by the same HTTP client as the saga, so its orders/s is what the same machine does
without the choreography."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psycopg
import stripe

from choreo.bench.ceiling import bench_server
from choreo.bench.cpu import cpu_seconds
from choreo.bench.load import GOOD_CARD, PRODUCT_STOCK
from choreo.db import sync_dsn
from choreo.stack.postgres import create_database, database_url, drop_database
from choreo.stack.process import OutputSink

_SCHEMAS = {
    "inventory": (
        "CREATE TABLE products (id uuid PRIMARY KEY, name text NOT NULL, price bigint NOT NULL,"
        " currency text NOT NULL, available integer NOT NULL CHECK (available >= 0),"
        " reserved integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),"
        " sold integer NOT NULL DEFAULT 0 CHECK (sold >= 0))",
        "CREATE TABLE reservations (order_id uuid PRIMARY KEY, product_id uuid NOT NULL,"
        " quantity integer NOT NULL, status text NOT NULL,"
        " created_at timestamptz NOT NULL DEFAULT now())",
    ),
    "orders": (
        "CREATE TABLE orders (id uuid PRIMARY KEY, product_id uuid NOT NULL,"
        " quantity integer NOT NULL, total bigint NOT NULL, currency text NOT NULL,"
        " status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
    ),
    "payments": (
        "CREATE TABLE payments (order_id uuid PRIMARY KEY, intent_id text NOT NULL,"
        " amount bigint NOT NULL, status text NOT NULL,"
        " created_at timestamptz NOT NULL DEFAULT now())",
    ),
    "notifications": (
        "CREATE TABLE deliveries (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " order_id uuid NOT NULL, subject text NOT NULL,"
        " sent_at timestamptz NOT NULL DEFAULT now())",
    ),
}


@dataclass
class BaselineResult:
    orders: int = 0
    refused: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    concurrency: int = 0

    @property
    def per_second(self) -> float:
        return self.orders / self.seconds if self.seconds > 0 else 0.0


@contextlib.contextmanager
def _databases(server: str, products: int) -> Iterator[tuple[dict[str, str], list[str]]]:
    run = uuid.uuid4().hex[:8]
    urls = {name: database_url(server, f"bench_sync_{name}_{run}") for name in _SCHEMAS}
    try:
        for name, statements in _SCHEMAS.items():
            create_database(server, f"bench_sync_{name}_{run}")
            with psycopg.connect(sync_dsn(urls[name]), autocommit=True) as connection:
                for statement in statements:
                    connection.execute(statement)
        product_ids = [str(uuid.uuid4()) for _ in range(products)]
        with psycopg.connect(sync_dsn(urls["inventory"]), autocommit=True) as connection:
            for number, product_id in enumerate(product_ids):
                connection.execute(
                    "INSERT INTO products (id, name, price, currency, available)"
                    " VALUES (%s, %s, %s, 'USD', %s)",
                    (product_id, f"Baseline {number}", 1000 + 100 * number, PRODUCT_STOCK),
                )
        yield {name: _async_url(url) for name, url in urls.items()}, product_ids
    finally:
        for name in _SCHEMAS:
            drop_database(server, f"bench_sync_{name}_{run}")


def _async_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def _stripe_customer(api_base: str, api_key: str) -> dict[str, str]:
    """A customer with a good card on the Stripe emulator, as the payment service makes one."""
    client = stripe.StripeClient(api_key, base_addresses={"api": api_base}, max_network_retries=0)
    customer = client.v1.customers.create(params={"metadata": {"bench": "baseline"}})
    method = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": GOOD_CARD, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    client.v1.payment_methods.attach(method.id, params={"customer": customer.id})
    return {"customer": customer.id, "payment_method": method.id, "email": "baseline@example.com"}


async def run_baseline(
    *,
    server: str,
    stripe_api_base: str,
    stripe_api_key: str,
    sendgrid_host: str,
    sendgrid_api_key: str,
    port: int,
    concurrency: int,
    seconds: float,
    products: int,
    processes: Callable[[], dict[str, int]],
    output: OutputSink,
) -> BaselineResult:
    """Orders/s of the synchronous baseline, closed-loop at `concurrency`, for `seconds`; and
    the CPU seconds each process (the stack's and the baseline server) spent meanwhile."""
    result = BaselineResult(concurrency=concurrency)
    customer = await asyncio.to_thread(_stripe_customer, stripe_api_base, stripe_api_key)
    with _databases(server, products) as (urls, product_ids):
        arguments = [
            "--databases",
            json.dumps(urls),
            "--stripe",
            stripe_api_base,
            "--stripe-key",
            stripe_api_key,
            "--sendgrid",
            sendgrid_host,
            "--sendgrid-key",
            sendgrid_api_key,
            "--customer",
            json.dumps(customer),
            "--pool-size",
            str(concurrency),
        ]
        async with bench_server("baseline", port, arguments, output) as child:
            assert child.pid is not None
            roots = {**processes(), "baseline server": child.pid}
            async with aiohttp.ClientSession(
                base_url=f"http://127.0.0.1:{port}",
                connector=aiohttp.TCPConnector(limit=concurrency),
                timeout=aiohttp.ClientTimeout(total=30),
                trust_env=False,
            ) as client:
                await _order(client, product_ids[0], None)  # warm the pools
                before = cpu_seconds(roots)
                started = time.perf_counter()
                deadline = started + seconds
                await asyncio.gather(
                    *(
                        _worker(client, product_ids, number, deadline, result)
                        for number in range(concurrency)
                    )
                )
                result.seconds = time.perf_counter() - started
                after = cpu_seconds(roots)
    result.cpu_seconds = {name: after[name] - before[name] for name in after if name in before}
    return result


async def _worker(
    client: aiohttp.ClientSession,
    product_ids: list[str],
    number: int,
    deadline: float,
    result: BaselineResult,
) -> None:
    count = number
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        if await _order(client, product_ids[count % len(product_ids)], result):
            result.orders += 1
            result.latencies.append(time.perf_counter() - started)
        count += 1


async def _order(
    client: aiohttp.ClientSession, product_id: str, result: BaselineResult | None
) -> bool:
    status: int | None = None
    try:
        async with client.post(
            "/orders", json={"product_id": product_id, "quantity": 1}
        ) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError):
        pass
    if status == 201:
        return True
    if result is not None:
        result.refused += 1
    return False


def baseline_json(result: BaselineResult) -> dict[str, Any]:
    return {
        "orders": result.orders,
        "refused": result.refused,
        "seconds": round(result.seconds, 3),
        "orders_per_s": result.per_second,
        "concurrency": result.concurrency,
        "cpu_ms_per_order": {
            name: 1000 * seconds / result.orders
            for name, seconds in sorted(result.cpu_seconds.items())
        }
        if result.orders
        else {},
    }
