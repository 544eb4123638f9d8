"""The load: customers with cards and products made through the gateway, then orders placed
open-loop (at times fixed in advance, so latency counts from when an order was due and no
coordinated omission hides a queue) or closed-loop (each worker waits for its saga's outcome)."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiohttp

from choreo.bench.outcomes import Outcome, Outcomes
from choreo.bench.plan import Plan
from choreo.cli.output import CliError

GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000341"
"""Stripe's test card that attaches but is declined when charged."""
PRODUCT_STOCK = 1_000_000_000
_PASSWORD = "bench-Walrus-Tuesday-42"
_TOKEN_LIFETIME = 600.0
"""Sign in again after this many seconds (access tokens live 15 minutes)."""
_RETRIED = {429, 503}
_SETUP_PATIENCE = 180.0


class BenchError(CliError):
    """A failure of the bench itself (the stack refused its set-up, or is not there): one line
    for the user, as every CLI error."""


class Kind(StrEnum):
    GOOD = "good"
    DECLINED = "declined"
    OUT_OF_STOCK = "out_of_stock"

    def expects(self, outcome: Outcome) -> bool:
        if self is Kind.GOOD:
            return outcome.type == "OrderConfirmed"
        reason = "PAYMENT_FAILED" if self is Kind.DECLINED else "OUT_OF_STOCK"
        return outcome.type == "OrderCancelled" and outcome.reason == reason


class Verdict(StrEnum):
    OK = "ok"
    FAILED = "failed"
    LOST = "lost"
    PENDING = "pending"


@dataclass
class Saga:
    """One order the bench placed, and what became of it. Times are seconds since the epoch."""

    number: int
    kind: Kind
    due: float
    """When it was to be sent (open-loop), or when it was sent (closed-loop)."""
    measured: bool
    """Due after the warm-up."""
    answered: float | None = None
    status: int | None = None
    order_id: str | None = None
    error: str | None = None
    outcome: Outcome | None = None

    def verdict(self, now: float, timeout: float) -> Verdict:
        if self.order_id is None:
            return Verdict.PENDING if self.status is None and self.error is None else Verdict.FAILED
        if self.outcome is None:
            return Verdict.LOST if now > self.due + timeout else Verdict.PENDING
        return Verdict.OK if self.kind.expects(self.outcome) else Verdict.FAILED

    @property
    def latency(self) -> float | None:
        """Due to outcome on `order.event`."""
        return None if self.outcome is None else max(0.0, self.outcome.at - self.due)

    @property
    def post_latency(self) -> float | None:
        return None if self.answered is None else self.answered - self.due


@dataclass
class Customer:
    email: str
    token: str
    signed_in: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Shop:
    """What the orders are placed with: customers by card, products by kind."""

    customers: dict[Kind, list[Customer]] = field(default_factory=dict)
    products: dict[Kind, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """One answer of the gateway, read in full."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; raises ValueError when it is not."""
        return json.loads(self.content)


class Gateway:
    """The public API, as the bench's one HTTP client reaches it.

    The client is aiohttp, as the services' own calls to one another: it costs the bench ~65 µs
    of CPU per request against ~550 µs through httpx (measured in session 14), and the bench
    shares the machine with the stack it measures.
    """

    def __init__(self, base_url: str, *, connections: int) -> None:
        self.base_url = f"{base_url}/api/v1"
        self._connections = connections
        # Made inside the running event loop, at the first request (aiohttp binds it to the loop).
        self._session: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = None, **kw: Any
    ) -> Answer:
        """One request, its answer read in full; raises aiohttp.ClientError or TimeoutError
        when no answer came."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections),
                # No limit on the wait for a connection: a queue for one is latency too.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=30.0),
                trust_env=False,
            )
        async with self._session.request(
            method, self.base_url + path, headers=headers, **kw
        ) as response:
            return Answer(response.status, response.headers, await response.read())

    async def patiently(
        self, method: str, path: str, *, token: str | None = None, **kw: Any
    ) -> Answer:
        """A set-up request, sent again while the stack answers 429 or 503 (a rate limit, a
        busy password hasher), as its Retry-After says."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        deadline = time.monotonic() + _SETUP_PATIENCE
        while True:
            try:
                response = await self.request(method, path, headers=headers, **kw)
            except aiohttp.ClientConnectorError as error:
                raise BenchError(
                    f"cannot reach the gateway at {self.base_url} ({error}): is the "
                    "stack running (choreo up), and is that its address?"
                ) from None
            except (aiohttp.ClientError, TimeoutError) as error:
                raise BenchError(
                    f"{method} {path} failed: {type(error).__name__}: {error}"
                ) from None
            if response.status_code not in _RETRIED or time.monotonic() > deadline:
                return response
            await asyncio.sleep(_retry_after(response))

    async def sign_in(self, email: str, password: str) -> str:
        response = await self.patiently(
            "POST", "/auth/login", json={"email": email, "password": password}
        )
        _expect(response, 200, f"sign-in of {email}")
        token: str = response.json()["access_token"]
        return token


async def set_up(
    gateway: Gateway,
    plan: Plan,
    admin: tuple[str, str] | None,
    say: Callable[[str], None],
) -> Shop:
    """Products (as the admin) and customers with cards, as many as the plan asks for."""
    if admin is None:
        raise BenchError(
            "no admin credentials to create the bench's products: give --admin-email and "
            "--admin-password (or CHOREO_ADMIN_EMAIL / CHOREO_ADMIN_PASSWORD)"
        )
    shop = Shop()
    admin_token = await gateway.sign_in(*admin)
    run = uuid.uuid4().hex[:6]
    wanted = {Kind.GOOD: (plan.products, PRODUCT_STOCK)}
    if plan.out_of_stock_share:
        wanted[Kind.OUT_OF_STOCK] = (1, 0)
    for kind, (count, stock) in wanted.items():
        for number in range(count):
            response = await gateway.patiently(
                "POST",
                "/products",
                token=admin_token,
                json={
                    "name": f"Bench {kind.value} {run}-{number}",
                    "description": "made by choreo bench",
                    "category": "bench",
                    "price": 1000 + 100 * number,
                    "currency": "USD",
                    "stock": stock,
                    "low_stock_threshold": 0,
                },
            )
            _expect(response, 201, "creating a product")
            shop.products.setdefault(kind, []).append(response.json()["id"])
    shop.products[Kind.DECLINED] = shop.products[Kind.GOOD]
    shop.products.setdefault(Kind.OUT_OF_STOCK, [])
    say(f"created {sum(count for count, _ in wanted.values())} products")

    declined = max(1, round(plan.customers * plan.declined_share)) if plan.declined_share else 0
    cards = [GOOD_CARD] * plan.customers + [DECLINED_CARD] * declined
    hashing = asyncio.Semaphore(4)  # the user service hashes a few passwords at a time
    made = 0

    async def customer(card: str) -> tuple[str, Customer]:
        nonlocal made
        async with hashing:
            made_customer = await _register(gateway, run, card)
        made += 1
        if made % 10 == 0 or made == len(cards):
            say(f"registered {made}/{len(cards)} customers with cards")
        return card, made_customer

    for card, made_customer in await asyncio.gather(*(customer(card) for card in cards)):
        kind = Kind.GOOD if card == GOOD_CARD else Kind.DECLINED
        shop.customers.setdefault(kind, []).append(made_customer)
    shop.customers[Kind.OUT_OF_STOCK] = shop.customers[Kind.GOOD]
    shop.customers.setdefault(Kind.DECLINED, [])
    return shop


async def _register(gateway: Gateway, run: str, card: str) -> Customer:
    email = f"bench-{run}-{uuid.uuid4().hex[:10]}@example.com"
    response = await gateway.patiently(
        "POST",
        "/auth/register",
        json={"email": email, "password": _PASSWORD, "full_name": "Bench Customer"},
    )
    _expect(response, 201, "registering a customer")
    token = await gateway.sign_in(email, _PASSWORD)
    card_data = {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"}
    response = await gateway.patiently(
        "POST", "/payment-methods", token=token, json={"card": card_data}
    )
    _expect(response, 201, "adding a card")
    return Customer(email, token, time.monotonic())


class Driver:
    """Places the plan's orders and notes each one's POST answer and outcome."""

    def __init__(self, plan: Plan, shop: Shop, gateway: Gateway, outcomes: Outcomes) -> None:
        self.plan = plan
        self.shop = shop
        self.gateway = gateway
        self.outcomes = outcomes
        self.sagas: list[Saga] = []
        self.started = 0.0
        self.stopped = 0.0
        self._chance = random.Random(plan.seed)
        # Orders of each special kind owed so far (see `_next_kind`).
        self._owed = {Kind.DECLINED: 0.0, Kind.OUT_OF_STOCK: 0.0}

    @property
    def measured_from(self) -> float:
        return self.started + self.plan.warmup

    @property
    def measured_until(self) -> float:
        return self.started + self.plan.warmup + self.plan.duration

    async def run(self, draining: Callable[[], None] = lambda: None) -> None:
        """Place orders for the warm-up and the measured time, then wait for every outcome
        (each until its deadline); `draining` is called when the last order is placed."""
        self.started = time.time()
        if self.plan.concurrency is not None:
            workers = [asyncio.create_task(self._worker()) for _ in range(self.plan.concurrency)]
            await asyncio.sleep(max(0.0, self.measured_until - time.time()))
            self.stopped = time.time()
            draining()
            await asyncio.gather(*workers)
        else:
            placing = await self._open_loop()
            self.stopped = time.time()
            draining()
            await asyncio.gather(*placing)

    async def _open_loop(self) -> list[asyncio.Task[None]]:
        assert self.plan.rate is not None
        count = round((self.plan.warmup + self.plan.duration) * self.plan.rate)
        placing = []
        for number in range(count):
            due = self.started + number / self.plan.rate
            pause = due - time.time()
            if pause > 0:
                await asyncio.sleep(pause)
            placing.append(asyncio.create_task(self._saga(self._new_saga(due))))
        return placing

    async def _worker(self) -> None:
        while time.time() < self.measured_until:
            saga = self._new_saga(time.time())
            await self._saga(saga)
            if saga.order_id is None:
                await asyncio.sleep(0.1)  # a refused order: do not spin

    async def _saga(self, saga: Saga) -> None:
        await self._place(saga)
        if saga.order_id is not None:
            saga.outcome = await self.outcomes.wait(
                saga.order_id, saga.due + self.plan.outcome_timeout
            )

    def _next_kind(self) -> Kind:
        """The shares asked for, exactly: each order adds its share to what each special kind
        is owed, and a kind owed a whole order gets this one. Over any run of orders each kind's
        count is within one of its share (a random draw per order gave 12 % for 20 %)."""
        self._owed[Kind.DECLINED] += self.plan.declined_share
        self._owed[Kind.OUT_OF_STOCK] += self.plan.out_of_stock_share
        kind = max(self._owed, key=lambda k: self._owed[k])
        if self._owed[kind] < 1.0:
            return Kind.GOOD
        self._owed[kind] -= 1.0
        return kind

    def _new_saga(self, due: float) -> Saga:
        kind = self._next_kind()
        saga = Saga(len(self.sagas), kind, due, measured=due >= self.measured_from)
        self.sagas.append(saga)
        return saga

    async def _place(self, saga: Saga) -> None:
        customer = self._chance.choice(self.shop.customers[saga.kind])
        product = self._chance.choice(self.shop.products[saga.kind])
        try:
            token = await self._token(customer)
            # Sent again once, with the same key, when the gateway closed a kept-alive
            # connection as the request went out on it (seen at twice the saturating load):
            # the order service answers a repeated key with the order it made the first time.
            headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
            for last in (False, True):
                try:
                    response = await self.gateway.request(
                        "POST",
                        "/orders",
                        json={"items": [{"product_id": product, "quantity": 1}]},
                        headers=headers,
                    )
                    break
                except aiohttp.ServerDisconnectedError:
                    if last:
                        raise
        except (aiohttp.ClientError, TimeoutError) as error:
            saga.answered = time.time()
            saga.error = type(error).__name__
            return
        saga.answered = time.time()
        saga.status = response.status_code
        if response.status_code == 202:
            saga.order_id = str(response.json()["id"])
        else:
            saga.error = f"HTTP {response.status_code} {_error_code(response)}".strip()

    async def _token(self, customer: Customer) -> str:
        async with customer.lock:
            if time.monotonic() - customer.signed_in > _TOKEN_LIFETIME:
                customer.token = await self.gateway.sign_in(customer.email, _PASSWORD)
                customer.signed_in = time.monotonic()
            return customer.token


def _expect(response: Answer, status: int, what: str) -> None:
    if response.status_code != status:
        raise BenchError(
            f"{what} through the gateway answered HTTP {response.status_code}: "
            f"{response.text[:300]}"
        )


def _error_code(response: Answer) -> str:
    """The `error.code` of an API error answer (`upstream_unavailable`), or nothing."""
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return ""
    return str(code)


def _retry_after(response: Answer) -> float:
    try:
        return min(10.0, max(0.2, float(response.headers.get("retry-after", "1"))))
    except ValueError:
        return 1.0
