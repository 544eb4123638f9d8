"""Property: whatever order and duplication the saga's records arrive in, the three services
converge — the customer is charged at most once, refunded exactly when the order ends
cancelled after a charge, never charged by a payment service whose clock had passed the
order's deadline, and stock is conserved.

The services run their real wiring (`build(settings)`, the kit's consumer with its inbox,
real PostgreSQL, localstripe); only the broker's delivery order is taken over by hypothesis,
which picks the next (record, service) delivery from everything published so far, redelivers
some, and throws in a customer cancel, a deadline sweep, and a service paused past the
deadline (from then on its clock reads past it, and the order service's sweep is due) at
arbitrary moments. Some orders are held for review by the payment service's risk screening (a
new account's order, with the trio's threshold at one order's amount), and an admin's approval
or rejection is thrown in at an arbitrary moment too (tried again until the order is held or
decided otherwise). Some cards ask for 3-D Secure: the customer authenticates (or fails to) at
an arbitrary moment once their order shows the action, or never (the order's deadline ends
it), and the emulator's webhook is delivered at an arbitrary moment, perhaps twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest_asyncio
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from choreo import kafka
from choreo.consumer import Consumer
from choreo.migrate import migrate
from choreo.service import Service
from choreo.stack.postgres import EmbeddedPostgres
from choreo.stack.stripe import TEST_SECRET_KEY
from inventory_service import handlers as inventory_handlers
from inventory_service.config import Settings as InventorySettings
from inventory_service.main import build as build_inventory
from order_service import handlers as order_handlers
from order_service.config import Settings as OrderSettings
from order_service.domain import OrderLine, OrderNotCancellableError, Product
from order_service.main import build as build_order
from payment_service import handlers as payment_handlers
from payment_service.config import Settings as PaymentSettings
from payment_service.handlers import vault
from payment_service.main import build as build_payment
from payment_service.stripe_client import NewCard, StripeGateway

from .conftest import DECLINED_CARD, GOOD_CARD

THREE_D_SECURE_CARD = "4000000000003220"

SERVICES = ("inventory", "payment", "order")
PAST_THE_DEADLINE = timedelta(hours=1)  # orders here have ten minutes


@dataclass
class Clock:
    """A service's clock: the real time, or, once the service was paused past the deadline,
    an hour later."""

    late: bool = False

    def __call__(self) -> datetime:
        return datetime.now(UTC) + (PAST_THE_DEADLINE if self.late else timedelta(0))


@dataclass
class Trio:
    """The three services, wired as in production, minus the broker's delivery."""

    services: dict[str, Service]
    consumers: dict[str, Consumer]
    gateway: StripeGateway
    stripe_api_base: str
    clocks: dict[str, Clock]
    delivered_offsets: dict[str, int] = field(default_factory=dict)

    def subscribers(self, topic: str) -> list[str]:
        return [name for name, c in self.consumers.items() if topic in c.topics]

    async def outbox_since(self, name: str, key: str, after: int) -> list[tuple[Any, ...]]:
        engine = self.services[name].engine
        assert engine is not None
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT id, topic, key, value, headers FROM outbox"
                    " WHERE key = :key AND id > :after ORDER BY id"
                ),
                {"key": key, "after": after},
            )
            return [tuple(row) for row in rows]

    async def execute(self, name: str, sql: str, **params: object) -> None:
        engine = self.services[name].engine
        assert engine is not None
        async with engine.begin() as connection:
            await connection.execute(text(sql), params)

    async def rows(self, name: str, sql: str, **params: object) -> list[tuple[Any, ...]]:
        engine = self.services[name].engine
        assert engine is not None
        async with engine.connect() as connection:
            return [tuple(row) for row in await connection.execute(text(sql), params)]

    async def one(self, name: str, sql: str, **params: object) -> tuple[Any, ...]:
        engine = self.services[name].engine
        assert engine is not None
        async with engine.connect() as connection:
            return tuple((await connection.execute(text(sql), params)).one())


def record_of(row: tuple[Any, ...], offset: int) -> ConsumerRecord[bytes, bytes]:
    _, topic, key, value, headers = row
    return ConsumerRecord(
        topic=topic,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key.encode(),
        value=bytes(value),
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=[(k, v.encode()) for k, v in headers.items()],
    )


@pytest_asyncio.fixture
async def trio(
    postgres: EmbeddedPostgres, kafka_bootstrap: str, topics: str, stripe_api_base: str
) -> AsyncIterator[Trio]:
    shared = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_FETCH_MAX_WAIT_MS": str(kafka.FAST_FETCH_MAX_WAIT_MS),  # a memory broker
        "CHOREO_TOPIC_PREFIX": topics,
        "STRIPE_API_BASE": stripe_api_base,
        "STRIPE_API_KEY": TEST_SECRET_KEY,
        "CHOREO_ENV": "test",
    }
    databases = {name: f"{name}_{uuid.uuid4().hex[:8]}" for name in SERVICES}
    for name, database in databases.items():
        postgres.create_database(database)
        url = postgres.url(database)
        await asyncio.to_thread(migrate, name, url)
        databases[name] = url
    clocks = {"inventory": Clock(), "payment": Clock()}
    services = {
        "inventory": build_inventory(
            InventorySettings(**shared, database_url=databases["inventory"]),
            now=clocks["inventory"],
        ),
        "payment": build_payment(
            PaymentSettings(
                **shared,
                database_url=databases["payment"],
                # A new account's order of one unit or more is held for review (customers
                # are new only when a test registers them: see `new_customer`).
                risk_new_account_review_amount=1000,
                # Every example's customer pays with one of three card numbers, each one
                # fingerprint: the velocity limits would hold or decline whatever the seed.
                risk_card_review_attempt=1_000_000,
                risk_card_decline_attempt=1_000_000,
                risk_card_testing_declines=1_000_000,
                risk_address_decline_attempt=1_000_000,
            ),
            now=clocks["payment"],
        ),
        "order": build_order(OrderSettings(**shared, database_url=databases["order"])),
    }
    producer = kafka.producer(kafka_bootstrap)
    await producer.start()
    gateway = StripeGateway(TEST_SECRET_KEY, stripe_api_base)
    trio_consumers = {name: service.consumer(producer) for name, service in services.items()}
    yield Trio(
        services=services,
        consumers=trio_consumers,
        gateway=gateway,
        stripe_api_base=stripe_api_base,
        clocks=clocks,
    )
    for consumer in trio_consumers.values():
        await consumer.close()
    await producer.stop()
    await gateway.aclose()
    for service in services.values():
        await service.aclose()


async def new_product(trio: Trio, stock: int) -> str:
    product = inventory_handlers.NewProduct(
        name="Prop widget",
        description="",
        category="prop",
        price=1000,
        currency="USD",
        stock=stock,
        low_stock_threshold=0,
        features=[],
        image_url=None,
    )
    return await inventory_handlers.create_product(
        trio.services["inventory"].unit_of_work()(),
        product,
        actor_id=str(uuid.uuid4()),
        traceparent=None,
    )


async def new_customer(trio: Trio, card: str, *, new_account: bool = False) -> str:
    """A customer with a card; a `new_account` registered just now (its orders are held)."""
    user_id = str(uuid.uuid4())
    if new_account:
        await trio.execute(
            "payment",
            "INSERT INTO risk_customers (user_id, email, registered_at)"
            " VALUES (:id, :email, now())",
            id=user_id,
            email=f"{user_id}@example.com",
        )
    uow_factory = trio.services["payment"].unit_of_work()
    customer_id = await vault.ensure_customer(uow_factory(), trio.gateway, user_id)
    await vault.add_payment_method(
        uow_factory(),
        trio.gateway,
        user_id,
        customer_id,
        card=NewCard(number=card, exp_month=12, exp_year=2034, cvc="123"),
    )
    return user_id


async def place(trio: Trio, user_id: str, product_id: str, quantity: int) -> str:
    async def lookup(ids: object) -> dict[str, Product]:
        return {product_id: Product(id=product_id, name="Prop widget", price=1000, currency="USD")}

    command = order_handlers.PlaceOrder(
        user_id=user_id, lines=(OrderLine(product_id=product_id, quantity=quantity),)
    )
    placed = await order_handlers.place_order(
        command,
        trio.services["order"].unit_of_work()(),
        lookup,
        saga_timeout=timedelta(minutes=10),
    )
    return placed.order_id


async def stripe_outcome(trio: Trio, order_id: str) -> tuple[int, int]:
    """(successful charges, refunds) localstripe holds for the order."""
    auth = {"Authorization": f"Bearer {TEST_SECRET_KEY}"}
    async with httpx.AsyncClient(base_url=trio.stripe_api_base, headers=auth) as client:
        intents = (await client.get("/v1/payment_intents", params={"limit": 100})).json()["data"]
        mine = {i["id"] for i in intents if (i.get("metadata") or {}).get("order_id") == order_id}
        succeeded = [i for i in intents if i["id"] in mine and i["status"] == "succeeded"]
        refunds = (await client.get("/v1/refunds", params={"limit": 100})).json()["data"]
    return len(succeeded), len([r for r in refunds if r.get("payment_intent") in mine])


async def authenticate(trio: Trio, intent_id: str, client_secret: str, success: bool) -> bool:
    """The customer completes (or fails) the 3-D Secure challenge; False when Stripe no longer
    asks for it (the payment service cancelled the intent: the order was cancelled)."""
    async with httpx.AsyncClient(base_url=trio.stripe_api_base) as client:
        response = await client.post(
            f"/v1/payment_intents/{intent_id}/_authenticate",
            data={
                "client_secret": client_secret,
                "success": "true" if success else "false",
                "key": "pk_test_choreo",
            },
        )
    return response.status_code == 200


async def webhook_of(trio: Trio, order_id: str, intent_id: str) -> payment_handlers.WebhookEvent:
    """The Stripe event the emulator sends for the intent's outcome, as the webhook endpoint
    reads it once its signature is verified."""
    [payment_id] = await trio.one(
        "payment", "SELECT payment_id FROM order_payments WHERE order_id = :id", id=order_id
    )
    return payment_handlers.WebhookEvent(
        id=f"evt_{uuid.uuid4().hex[:24]}",
        type="payment_intent.succeeded",
        intent_id=intent_id,
        order_id=order_id,
        payment_id=str(payment_id),
    )


async def reservation_of(trio: Trio, order_id: str) -> str | None:
    """The status of the inventory service's reservation of the order (None: no row)."""
    [status] = await trio.one(
        "inventory", "SELECT (SELECT status FROM reservations WHERE order_id = :id)", id=order_id
    )
    return None if status is None else str(status)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    stock=st.integers(0, 2),
    quantity=st.integers(1, 2),
    card=st.sampled_from([GOOD_CARD, DECLINED_CARD, THREE_D_SECURE_CARD]),
    # Which service is paused past the deadline, and before which step (if the saga gets
    # that far): hypothesis explores these directly, the seed only the deliveries.
    pause=st.none() | st.tuples(st.sampled_from(["payment", "inventory"]), st.integers(0, 8)),
    # Held for review, then an admin's verdict at an arbitrary moment.
    review=st.none() | st.sampled_from(list(payment_handlers.Verdict)),
    # A 3-D Secure card's customer: authenticates (True), fails (False), or never acts (None).
    authentication=st.none() | st.booleans(),
)
# Always tried: a service paused past the deadline in deliveries that, without the rule, made
# the payment service charge after the pause (then refund: issue 11), or the inventory
# service reserve after it.
@example(
    seed=7,
    stock=2,
    quantity=1,
    card=GOOD_CARD,
    pause=("payment", 0),
    review=None,
    authentication=None,
)
@example(
    seed=2,
    stock=2,
    quantity=1,
    card=GOOD_CARD,
    pause=("payment", 2),
    review=None,
    authentication=None,
)
@example(
    seed=0,
    stock=2,
    quantity=1,
    card=GOOD_CARD,
    pause=("inventory", 0),
    review=None,
    authentication=None,
)
# Always tried: a held order approved, and one rejected, at whatever moment the seed picks.
@example(
    seed=3,
    stock=2,
    quantity=1,
    card=GOOD_CARD,
    pause=None,
    review=payment_handlers.Verdict.APPROVE,
    authentication=None,
)
@example(
    seed=4,
    stock=2,
    quantity=1,
    card=GOOD_CARD,
    pause=None,
    review=payment_handlers.Verdict.REJECT,
    authentication=None,
)
# Always tried: a 3-D Secure customer who authenticates, one who fails, one who never acts.
@example(
    seed=11,
    stock=2,
    quantity=1,
    card=THREE_D_SECURE_CARD,
    pause=None,
    review=None,
    authentication=True,
)
@example(
    seed=11,
    stock=2,
    quantity=1,
    card=THREE_D_SECURE_CARD,
    pause=None,
    review=None,
    authentication=False,
)
@example(
    seed=6,
    stock=2,
    quantity=1,
    card=THREE_D_SECURE_CARD,
    pause=None,
    review=None,
    authentication=None,
)
async def test_any_delivery_order_converges(
    trio: Trio,
    seed: int,
    stock: int,
    quantity: int,
    card: str,
    pause: tuple[str, int] | None,
    review: payment_handlers.Verdict | None,
    authentication: bool | None,
) -> None:
    # One seed drives every delivery choice: how many choices there are depends on what the
    # services emitted, which hypothesis cannot see, so it draws the seed and not the choices.
    chance = random.Random(seed)
    for clock in trio.clocks.values():
        clock.late = False
    product_id = await new_product(trio, stock)
    user_id = await new_customer(trio, card, new_account=review is not None)
    order_id = await place(trio, user_id, product_id, quantity)

    seen = dict.fromkeys(SERVICES, 0)
    pending: list[tuple[str, Any]] = [("cancel", None), ("deadline", None)]
    if review is not None:
        pending.append(("review", review))
    if card == THREE_D_SECURE_CARD:
        # The customer acts once their order shows the action; or never, and the order's
        # deadline passes (the sweep, at an arbitrary moment).
        pending.append(("overdue", None) if authentication is None else ("authenticate", None))
    authenticated: list[bool] = []  # the customer's authentications that reached Stripe
    reviewed: list[str] = []  # the verdicts that decided the review
    paused, pause_step = pause or (None, -1)
    charged_before_the_pause: int | None = None
    reservation_before_the_pause = False
    offset = 0

    async def collect() -> None:
        for name in SERVICES:
            for row in await trio.outbox_since(name, order_id, seen[name]):
                seen[name] = row[0]
                pending.extend(("deliver", (s, row)) for s in trio.subscribers(row[1]))

    async def act(kind: str, what: Any) -> None:
        nonlocal offset, charged_before_the_pause, reservation_before_the_pause
        if kind == "deliver":
            service, row = what
            offset += 1
            await trio.consumers[service].handle(record_of(row, offset))
        elif kind == "cancel":
            # Not cancellable any more (confirmed-then-processing is out of scope; cancelled
            # already): a real customer gets a 409.
            with contextlib.suppress(OrderNotCancellableError):
                await order_handlers.cancel_order(
                    order_id, user_id, trio.services["order"].unit_of_work()()
                )
        elif kind == "review":
            try:
                decided = await payment_handlers.decide_review(
                    trio.services["payment"].unit_of_work()(),
                    trio.services["payment"].resource("charging", payment_handlers.Charging),
                    uuid.UUID(order_id),
                    what,
                    admin_id="admin",
                    note=None,
                )
            except payment_handlers.ReviewNotFoundError:
                # Not held yet: the admin looks again later (while anything can still arrive).
                if not draining or any(k == "deliver" for k, _ in pending):
                    pending.append((kind, what))
            except payment_handlers.ReviewClosedError:
                pass  # voided: the order was cancelled while held
            else:
                if decided.decided_now:
                    reviewed.append(what)
                    await collect()
        elif kind == "authenticate":
            action = await trio.rows(
                "order",
                "SELECT provider_payment_id, client_secret FROM order_payment_actions"
                " WHERE order_id = :id",
                id=order_id,
            )
            if not action:
                # Not shown yet: the customer looks again later (while anything can arrive).
                if not draining or any(k == "deliver" for k, _ in pending):
                    pending.append((kind, what))
                return
            [(intent_id, client_secret)] = action
            if await authenticate(trio, intent_id, client_secret, bool(authentication)):
                authenticated.append(bool(authentication))
                pending.append(("webhook", await webhook_of(trio, order_id, intent_id)))
        elif kind == "webhook":
            charging = trio.services["payment"].resource("charging", payment_handlers.Charging)
            await payment_handlers.apply_once(
                trio.services["payment"].unit_of_work()(), charging, what
            )
        elif kind == "pause":
            # The service resumes past the deadline: its clock says so from now on, and the
            # order service's sweep is due (it cancels the order unless it was confirmed).
            charged_before_the_pause, _ = await stripe_outcome(trio, order_id)
            reservation_before_the_pause = await reservation_of(trio, order_id) is not None
            trio.clocks[what].late = True
            pending.append(("overdue", None))
        else:
            await order_handlers.cancel_overdue_orders(
                trio.services["order"].unit_of_work()(),
                batch_size=10,
                now=lambda: datetime.now(UTC) + timedelta(hours=1),
            )

    draining = False
    await collect()
    for step in range(80):
        if step == pause_step:
            await act("pause", paused)
        if not pending:
            break
        kind, what = pending.pop(chance.randrange(len(pending)))
        if kind in ("cancel", "deadline") and chance.random() < 0.5:
            continue
        await act(kind, what)
        if kind in ("deliver", "webhook") and chance.random() < 0.4:
            pending.append((kind, what))
        await collect()
    if paused is not None and charged_before_the_pause is None:
        await act("pause", paused)  # the saga was shorter than the pause's step
    draining = True
    while pending:  # let the rest arrive, in order, so the saga can finish
        kind, what = pending.pop(0)
        if kind in ("deliver", "overdue", "review", "authenticate", "webhook"):
            await act(kind, what)
            await collect()

    status, cancel_reason = await trio.one(
        "order", "SELECT status, cancel_reason FROM orders WHERE id = :id", id=order_id
    )
    charged, refunded = await stripe_outcome(trio, order_id)
    available, reserved, sold = await trio.one(
        "inventory",
        "SELECT available, reserved, sold FROM products WHERE id = :id",
        id=product_id,
    )
    assert status in ("CONFIRMED", "CANCELLED")
    assert charged <= 1, "charged twice"
    assert available + reserved + sold == stock, "stock not conserved"
    assert reserved == 0, "units still held after the saga ended"
    if status == "CONFIRMED":
        assert (charged, refunded, sold) == (1, 0, quantity)
    else:
        assert refunded == charged, "a cancelled order's charge was not refunded"
        assert sold == 0
    if paused == "payment" and not reviewed:
        assert charged == charged_before_the_pause, "charged after the deadline"
    if card == THREE_D_SECURE_CARD:
        # Charged only by the customer's authentication; a confirmed order had one.
        assert charged <= authenticated.count(True)
        if status == "CONFIRMED":
            assert authenticated == [True]
    if review is not None:
        # Held orders are charged only by an approval, and never twice.
        assert charged <= reviewed.count(payment_handlers.Verdict.APPROVE)
        if status == "CONFIRMED":
            assert reviewed == [payment_handlers.Verdict.APPROVE]
    # A step that gave up says nothing, so the order ends cancelled for its true reason.
    [payment] = await trio.one(
        "payment",
        "SELECT (SELECT status FROM order_payments WHERE order_id = :id)",
        id=order_id,
    )
    reservation = await reservation_of(trio, order_id)
    if paused == "inventory" and not reservation_before_the_pause:
        assert reservation in (
            None,
            "CANCELLED_BEFORE_RESERVATION",
            "EXPIRED_BEFORE_RESERVATION",
        ), "reserved after the deadline"
    if payment == "EXPIRED":
        assert paused == "payment"
        assert (status, charged) == ("CANCELLED", 0)
        assert cancel_reason in ("TIMEOUT", "CUSTOMER_REQUEST", "OUT_OF_STOCK")
    if reservation == "EXPIRED_BEFORE_RESERVATION":
        assert paused == "inventory"
        assert (status, charged) == ("CANCELLED", 0)
        assert cancel_reason in ("TIMEOUT", "CUSTOMER_REQUEST")
