"""`choreo verify` against migrated service databases, the real broker, a localstripe and an
e-mail sink of its own: rows of a healthy history pass; each violation planted directly in a
database, at Stripe, at the sink or on the broker is named."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from typer.testing import CliRunner, Result

from choreo import kafka
from choreo.cli import app
from choreo.migrate import migrate
from choreo.stack.postgres import EmbeddedPostgres
from choreo.stack.sendgrid_sink import SendGridSink
from choreo.stack.stripe import TEST_SECRET_KEY, LocalStripe
from choreo.testing import free_port

runner = CliRunner()
SERVICES = ("user", "order", "payment", "inventory", "notification")
LONG_AGO = timedelta(minutes=5)


async def choreo(env: dict[str, str], *arguments: str) -> Result:
    """Run the CLI in-process (in a thread: it runs an event loop of its own)."""
    return await asyncio.to_thread(runner.invoke, app, list(arguments), env=env)


async def verify(env: dict[str, str], *arguments: str) -> tuple[int, dict[str, Any]]:
    result = await choreo(env, "verify", "--json", *arguments)
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture(scope="module")
def stripe() -> Iterator[str]:
    """A localstripe of this module's own: the session's holds other tests' charges."""
    emulator = LocalStripe(free_port())
    emulator.start()
    try:
        yield emulator.api_base
    finally:
        emulator.stop()


@pytest.fixture(scope="module")
def sink() -> Iterator[str]:
    part = SendGridSink(free_port())
    part.start()
    try:
        yield part.host
    finally:
        part.stop()


@pytest_asyncio.fixture
async def databases(postgres: EmbeddedPostgres) -> AsyncIterator[dict[str, str]]:
    """Service -> the URL of a fresh database migrated as that service's."""
    names = {service: f"verify_{service}_{uuid.uuid4().hex[:8]}" for service in SERVICES}
    urls = {}
    for service, name in names.items():
        postgres.create_database(name)
        urls[service] = postgres.url(name)
    for service, url in urls.items():  # one at a time: Alembic's context is process-wide
        await asyncio.to_thread(migrate, service, url)
    yield urls
    for name in names.values():
        postgres.drop_database(name)


@dataclass
class History:
    """Writes rows the way the services would have, straight into their databases."""

    urls: dict[str, str]
    stripe: httpx.AsyncClient
    sink: httpx.AsyncClient
    customer: str = field(default_factory=lambda: str(uuid.uuid4()))
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    async def sql(self, service: str, statement: str, *parameters: object) -> None:
        async with await psycopg.AsyncConnection.connect(self.urls[service]) as connection:
            await connection.execute(statement, parameters)

    async def product(self, received: int, available: int, reserved: int = 0, sold: int = 0) -> str:
        product_id = str(uuid.uuid4())
        await self.sql(
            "inventory",
            "INSERT INTO products (id, name, category, price, currency, available, reserved, sold,"
            " low_stock_threshold) VALUES (%s, %s, 'kitchen', 2500, 'USD', %s, %s, %s, 0)",
            product_id,
            f"kettle {product_id[:4]}",
            available,
            reserved,
            sold,
        )
        await self.sql(
            "inventory",
            "INSERT INTO stock_adjustments (product_id, delta, reason, available_after, actor_id)"
            " VALUES (%s, %s, 'initial stock', %s, 'admin')",
            product_id,
            received,
            received,
        )
        return product_id

    async def order(
        self,
        status: str,
        *,
        cancel_reason: str | None = None,
        confirmed_event: str | None = None,
        placed: datetime | None = None,
        deadline: datetime | None = None,
    ) -> str:
        """An order placed `placed` (5 min ago), its deadline a minute after."""
        order_id = str(uuid.uuid4())
        placed = placed or self.now - LONG_AGO
        deadline = deadline or placed + timedelta(seconds=60)
        await self.sql(
            "order",
            "INSERT INTO orders (id, user_id, status, cancel_reason, total_amount, currency,"
            " deadline, request_hash, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, 5000, 'USD', %s, 'digest', %s, %s)",
            order_id,
            self.customer,
            status,
            cancel_reason,
            deadline,
            placed,
            placed + timedelta(seconds=2),
        )
        if confirmed_event is not None:
            await self.sql(
                "order",
                "INSERT INTO order_timeline (order_id, event_id, event_type, direction, source,"
                " occurred_at, summary) VALUES (%s, %s, 'OrderConfirmed', 'emitted',"
                " 'order_service', %s, 'confirmed')",
                order_id,
                confirmed_event,
                placed,
            )
        return order_id

    async def reservation(self, order_id: str, status: str, product_id: str, quantity: int) -> None:
        await self.sql(
            "inventory",
            "INSERT INTO reservations (order_id, status) VALUES (%s, %s)",
            order_id,
            status,
        )
        await self.sql(
            "inventory",
            "INSERT INTO reservation_lines (order_id, product_id, quantity) VALUES (%s, %s, %s)",
            order_id,
            product_id,
            quantity,
        )

    async def payment(
        self,
        order_id: str,
        status: str,
        intent: str | None = None,
        *,
        refunded: int = 0,
        cancelled: bool = False,
    ) -> None:
        await self.sql(
            "payment",
            "INSERT INTO order_payments (order_id, order_known, user_id, amount, currency,"
            " stock_reserved, cancelled, status, provider_payment_id, refunded_amount)"
            " VALUES (%s, true, %s, 5000, 'USD', true, %s, %s, %s, %s)",
            order_id,
            self.customer,
            cancelled,
            status,
            intent,
            refunded,
        )

    async def intent(
        self, order_id: str, *, card: str = "4242424242424242", confirm: bool = True
    ) -> str:
        stripe = self.stripe
        customer = (await stripe.post("/v1/customers", data={})).json()["id"]
        card_data = {
            "type": "card",
            "card[number]": card,
            "card[exp_month]": "12",
            "card[exp_year]": "2034",
            "card[cvc]": "123",
        }
        method = (await stripe.post("/v1/payment_methods", data=card_data)).json()["id"]
        await stripe.post(f"/v1/payment_methods/{method}/attach", data={"customer": customer})
        created = await stripe.post(
            "/v1/payment_intents",
            data={
                "amount": "5000",
                "currency": "usd",
                "customer": customer,
                "payment_method": method,
                "metadata[order_id]": order_id,
            },
        )
        intent_id: str = created.json()["id"]
        if confirm:
            await stripe.post(f"/v1/payment_intents/{intent_id}/confirm")
        return intent_id

    async def refund(self, intent_id: str) -> None:
        response = await self.stripe.post("/v1/refunds", data={"payment_intent": intent_id})
        assert response.status_code == 200, response.text

    async def email(self, event_id: str, order_id: str) -> None:
        """The order-confirmed e-mail, as the notification service sends it."""
        await self.sql(
            "notification",
            "INSERT INTO deliveries (event_id, recipient, kind, status)"
            " VALUES (%s, %s, 'order_confirmed', 'sent') ON CONFLICT DO NOTHING",
            event_id,
            self.customer,
        )
        response = await self.sink.post(
            "/v3/mail/send",
            json={
                "from": {"email": "shop@example.com"},
                "subject": "Your order is confirmed",
                "personalizations": [{"to": [{"email": "customer@example.com"}]}],
                "content": [{"type": "text/plain", "value": f"Order id: {order_id}"}],
                "custom_args": {"event_id": event_id, "notification": "order_confirmed"},
            },
            headers={"Authorization": "Bearer SG.test"},
        )
        assert response.status_code == 202, response.text

    async def chose_sms_only(self) -> None:
        """The customer chose SMS only for order updates (their preferences, replicated)."""
        await self.sql(
            "notification",
            "INSERT INTO contacts (user_id, email, full_name, role, phone)"
            " VALUES (%s, 'texter@example.com', 'T', 'customer', '+12025550143')",
            self.customer,
        )
        await self.sql(
            "notification",
            "INSERT INTO preferences (user_id, channels, changed_at) VALUES (%s, %s, %s)",
            self.customer,
            json.dumps({"order_updates": {"email": False, "sms": True, "in_app": False}}),
            self.now - LONG_AGO,
        )

    async def sms(self, event_id: str) -> None:
        """The order-confirmed SMS, as the notification service records it."""
        await self.sql(
            "notification",
            "INSERT INTO deliveries (event_id, recipient, kind, channel, status)"
            " VALUES (%s, %s, 'order_confirmed', 'sms', 'sent')",
            event_id,
            self.customer,
        )

    async def confirmed(self, product_id: str, *, email: bool = True) -> str:
        """A confirmed order as every service leaves it: stock committed, charged once."""
        event = str(uuid.uuid4())
        order_id = await self.order("CONFIRMED", confirmed_event=event)
        await self.reservation(order_id, "COMMITTED", product_id, 1)
        await self.payment(order_id, "SUCCEEDED", await self.intent(order_id))
        if email:
            await self.email(event, order_id)
        return order_id


async def test_a_healthy_history_passes_and_every_planted_violation_is_named(
    databases: dict[str, str], stripe: str, sink: str, kafka_bootstrap: str, topics: str
) -> None:
    env = {
        **{f"{service.upper()}_DATABASE_URL": url for service, url in databases.items()},
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CHOREO_TOPIC_PREFIX": topics,
        "STRIPE_API_BASE": stripe,
        "STRIPE_API_KEY": TEST_SECRET_KEY,
        "SENDGRID_HOST": sink,
    }
    stripe_client = httpx.AsyncClient(
        base_url=stripe, headers={"Authorization": f"Bearer {TEST_SECRET_KEY}"}
    )
    sink_client = httpx.AsyncClient(base_url=sink)
    history = History(databases, stripe_client, sink_client)
    now = history.now
    await history.sql(
        "notification",
        "INSERT INTO contacts (user_id, email, full_name, role) VALUES (%s, %s, 'C', 'customer')",
        history.customer,
        "customer@example.com",
    )
    await sink_client.delete("/messages")
    # A customer who chose SMS only for order updates, and got the SMS of their order.
    texter = History(databases, stripe_client, sink_client)
    await texter.chose_sms_only()
    teapot = await texter.product(received=1, available=0, sold=1)
    texted_event = str(uuid.uuid4())
    texted = await texter.order("CONFIRMED", confirmed_event=texted_event)
    await texter.reservation(texted, "COMMITTED", teapot, 1)
    await texter.payment(texted, "SUCCEEDED", await texter.intent(texted))
    await texter.sms(texted_event)
    # One who was texted while SMS-only, then went back to e-mail: judged as they chose then.
    switcher = History(databases, stripe_client, sink_client)
    await switcher.chose_sms_only()
    cup = await switcher.product(received=1, available=0, sold=1)
    switched_event = str(uuid.uuid4())
    switched = await switcher.order("CONFIRMED", confirmed_event=switched_event)
    await switcher.reservation(switched, "COMMITTED", cup, 1)
    await switcher.payment(switched, "SUCCEEDED", await switcher.intent(switched))
    await switcher.sms(switched_event)
    await switcher.sql(
        "notification",
        "UPDATE preferences SET channels = %s, changed_at = %s WHERE user_id = %s",
        json.dumps({"order_updates": {"email": True, "sms": False, "in_app": True}}),
        switcher.now,
        switcher.customer,
    )

    # A healthy history on one product (20 received): confirmed, declined, out of stock,
    # confirmed then cancelled and refunded, and one still in progress holding a unit.
    kettle = await history.product(received=20, available=17, reserved=1, sold=2)
    confirmed = await history.confirmed(kettle)
    await history.confirmed(kettle)
    declined = await history.order("CANCELLED", cancel_reason="PAYMENT_FAILED")
    await history.reservation(declined, "RELEASED", kettle, 1)
    await history.intent(declined, card="4000000000000341")
    await history.payment(declined, "FAILED", cancelled=True)
    sold_out = await history.order("CANCELLED", cancel_reason="OUT_OF_STOCK")
    await history.reservation(sold_out, "REJECTED", kettle, 30)
    await history.payment(sold_out, "NONE", cancelled=True)
    regretted_event = str(uuid.uuid4())
    regretted = await history.order(
        "CANCELLED", cancel_reason="CUSTOMER_REQUEST", confirmed_event=regretted_event
    )
    await history.reservation(regretted, "RELEASED", kettle, 1)
    regretted_intent = await history.intent(regretted)
    await history.refund(regretted_intent)
    await history.payment(regretted, "REFUNDED", regretted_intent, refunded=5000, cancelled=True)
    await history.email(regretted_event, regretted)
    in_progress = await history.order("RESERVED", placed=now, deadline=now + timedelta(minutes=5))
    await history.reservation(in_progress, "RESERVED", kettle, 1)
    await history.payment(in_progress, "NONE")
    # A record the notification service could never read, parked and never replayed.
    producer = kafka.producer(kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            f"{topics}notification.dlq",
            b"not avro",
            key=b"poison",
            headers=[
                ("dlq.original.topic", f"{topics}order.create".encode()),
                ("dlq.consumer", b"notification_service"),
                ("dlq.error.type", b"UndecodableError"),
                ("dlq.error.message", b"not an Avro single-object encoded value"),
            ],
        )
    finally:
        await producer.stop()

    code, healthy = await verify(env)

    assert (code, healthy["ok"], healthy["violations"]) == (0, True, [])
    checks = {check["name"]: check for check in healthy["checks"]}
    assert {name: check["status"] for name, check in checks.items()} == {
        "orders-terminal": "ok",
        "services-agree": "ok",
        "stock-conserved": "ok",
        "stripe": "ok",
        "emails": "ok",
        "outboxes": "ok",
        "consumer-lag": "ok",
        "dead-letters": "warnings",
    }
    # Nothing was in flight (outboxes drained, no lag): every ended order was judged.
    assert checks["services-agree"]["facts"] == {"judged": 7, "in_flight": 0}
    assert checks["emails"]["facts"]["source"] == "e-mails at the sink"
    assert checks["orders-terminal"]["facts"]["in_time"] == 1
    assert checks["dead-letters"]["facts"]["sizes"][f"{topics}notification.dlq"] == 1
    (warning,) = healthy["warnings"]
    assert warning["id"] == f"{topics}notification.dlq:{warning['id'].split(':')[1]}:0"
    assert "cannot be read" in warning["actual"]
    people = await choreo(env, "verify")
    assert people.exit_code == 0, people.output
    assert "consistent (1 warning)" in people.stdout
    assert "never replayed" in people.stdout
    # The sink forgets its messages when the stack restarts: the e-mails the deliveries record
    # as sent still count, so a restarted stack is no less consistent.
    await sink_client.delete("/messages")
    code, restarted = await verify(env)
    assert (code, restarted["violations"]) == (0, [])

    # Now the violations, each planted directly.
    stuck = await history.order("PENDING", deadline=now - timedelta(minutes=3))
    forgotten = await history.order(
        "RESERVED", placed=now - timedelta(hours=3), deadline=now - timedelta(hours=3)
    )
    twice = await history.intent(confirmed)  # a second succeeded charge for one order
    lost = await history.product(received=10, available=9)
    unmailed = await history.confirmed(kettle, email=False)
    doubled_event = str(uuid.uuid4())
    doubled = await history.order("CONFIRMED", confirmed_event=doubled_event)
    await history.reservation(doubled, "COMMITTED", kettle, 1)
    await history.payment(doubled, "SUCCEEDED", await history.intent(doubled))
    await history.email(doubled_event, doubled)
    await history.email(doubled_event, doubled)
    # The SMS-only customer got an e-mail and no SMS.
    mistexted_event = str(uuid.uuid4())
    mistexted = await texter.order("CONFIRMED", confirmed_event=mistexted_event)
    mug = await texter.product(received=1, available=0, sold=1)
    await texter.reservation(mistexted, "COMMITTED", mug, 1)
    await texter.payment(mistexted, "SUCCEEDED", await texter.intent(mistexted))
    await texter.email(mistexted_event, mistexted)
    disagreed = await history.order("CANCELLED", cancel_reason="TIMEOUT")
    await history.reservation(disagreed, "RELEASED", kettle, 1)
    await history.payment(disagreed, "SUCCEEDED", await history.intent(disagreed), cancelled=True)
    left_open = await history.intent(in_progress, confirm=False)
    await history.sql(
        "payment",
        "INSERT INTO outbox (topic, key, value, headers, created_at)"
        " VALUES ('payment.event', %s, '\\x00', '{}', %s)",
        disagreed,
        now - timedelta(minutes=10),
    )
    # The inventory service's group committed offset 5 on a partition that holds nothing.
    order_create = TopicPartition(f"{topics}order.create", 0)
    member = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{topics}inventory_service",
        enable_auto_commit=False,
    )
    await member.start()
    try:
        member.assign([order_create])
        await member.commit({order_create: 5})
    finally:
        await member.stop()
    # The counters follow the planted orders (2 committed, 1 released): only `lost` is off.
    await history.sql(
        "inventory", "UPDATE products SET available = 15, sold = 4 WHERE id = %s", kettle
    )

    code, report = await verify(env, "--grace", "0")

    assert (code, report["ok"]) == (1, False)
    named = {(v["check"], v["id"]) for v in report["violations"]}
    assert named >= {
        ("orders-terminal", stuck),
        ("orders-terminal", forgotten),
        ("stripe", confirmed),
        ("stock-conserved", lost),
        ("emails", unmailed),
        ("emails", doubled),
        ("emails", mistexted),
        ("services-agree", disagreed),
        ("stripe", left_open),
        ("consumer-lag", f"{topics}inventory_service:{topics}order.create:0"),
    }
    assert any(check == "outboxes" and id.startswith("payment.outbox:") for check, id in named)
    by_id = {(v["check"], v["id"]): v for v in report["violations"]}
    double = by_id[("stripe", confirmed)]
    assert double["what"] == "order charged more than once"
    assert (double["expected"], double["actual"][:20]) == (
        "at most one succeeded charge",
        "2 succeeded charges:",
    )
    assert twice in double["actual"]
    assert by_id[("stock-conserved", lost)]["actual"] == "9 + 0 + 0 = 9"
    assert by_id[("emails", doubled)]["actual"] == "2 e-mail(s)"
    assert by_id[("emails", unmailed)]["actual"] == "0 e-mail(s)"
    assert by_id[("emails", mistexted)]["actual"] == "1 e-mail(s), 0 SMS"
    assert by_id[("emails", mistexted)]["expected"] == "exactly one SMS order-confirmed notice"
    disagreement = by_id[("services-agree", disagreed)]
    assert disagreement["what"] == "CANCELLED(TIMEOUT) order charged and not refunded"
    assert disagreement["expected"] == "no charge, or a full refund"
    assert by_id[("stripe", left_open)]["actual"].startswith("requires_confirmation since")
    beyond = by_id[("consumer-lag", f"{topics}inventory_service:{topics}order.create:0")]
    assert beyond["actual"] == "committed 5, ahead of the log by 5"
    assert by_id[("orders-terminal", stuck)]["actual"].startswith("PENDING, ")
    # No false alarms: the healthy orders stay out of it.
    for order_id in (declined, sold_out, regretted, in_progress, texted, switched):
        assert not any(order_id in (v["id"], v["actual"]) for v in report["violations"])

    # For people: the summary table, then one line per violation.
    people = await choreo(env, "verify", "--grace", "0")
    assert people.exit_code == 1
    (line,) = [row for row in people.stdout.splitlines() if lost in row]
    assert line.split() == [
        "stock-conserved",
        lost,
        *f"stock of 'kettle {lost[:4]}' not conserved: expected available + reserved + sold"
        " = 10 (received through admin adjustments), actual 9 + 0 + 0 = 9".split(),
    ]
    assert "inconsistent: " in people.stdout

    # --since leaves out what happened before it.
    code, recent = await verify(env, "--grace", "0", "--since", "1h")
    stuck_orders = {v["id"] for v in recent["violations"] if v["check"] == "orders-terminal"}
    assert (code, stuck_orders) == (1, {stuck})

    # A database out of reach is no pass.
    nowhere = {**env, "INVENTORY_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"}
    code, unverified = await verify(nowhere)
    statuses = {check["name"]: check["status"] for check in unverified["checks"]}
    assert (code, unverified["ok"]) == (1, False)
    assert statuses["stock-conserved"] == statuses["services-agree"] == "could not verify"
    assert statuses["outboxes"] == "could not verify"
    assert statuses["orders-terminal"] == "violations"
    await stripe_client.aclose()
    await sink_client.aclose()
