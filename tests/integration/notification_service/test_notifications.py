"""The notification service as a process, on real PostgreSQL and the broker, e-mailing a
SendGrid sink: who gets which e-mail (once, whatever the order and duplication of events),
the in-app notifications API, and what happens when SendGrid fails."""

from __future__ import annotations

import asyncio
from collections import Counter

from choreo import kafka
from choreo.auth import SigningKey
from choreo.dead_letters import replay_headers
from choreo.events import Event
from choreo.records import Record
from choreo.testing import ServiceProcess, StartService, eventually, publish
from choreo.testing import records as make

from .conftest import (
    Sink,
    address,
    applied,
    key_in_partition_of,
    low_stock_detected,
    new_id,
    order_cancelled,
    order_confirmed,
    order_created,
    payment_failed,
    payment_refunded,
    query,
    read_records,
    records_handled,
    start_notification,
    user_deleted,
    user_registered,
    user_updated,
)

PHISHING = "Your account is locked, verify at http://evil.example\r\nBcc: x@evil.example"


async def wait_for_mail(sink: Sink, to: str, *subject_parts: str, timeout: float = 30.0) -> None:
    """Wait until `to` has an e-mail whose subject contains each of `subject_parts`."""

    async def arrived() -> bool:
        subjects = await sink.subjects(to)
        return all(any(part in subject for subject in subjects) for part in subject_parts)

    await eventually(arrived, f"e-mails to {to} about {subject_parts}", timeout=timeout)


async def test_contacts_welcome_in_app_notifications_and_low_stock(
    start_service: StartService,
    sink: Sink,
    signing_key: SigningKey,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    ada, admin, other_admin, carl, mallory = new_id(), new_id(), new_id(), new_id(), new_id()
    ada_email, ada_new_email = address("ada"), address("ada.new")
    admin_email, other_admin_email, carl_email = address("admin"), address("boss"), address("carl")
    mallory_email = address("mallory")
    await publish(
        kafka_bootstrap,
        topics,
        user_registered(ada, ada_email, "Ada Lovelace"),
        user_updated(ada, ada_new_email, "Ada King"),
        user_registered(admin, admin_email, "Grace Hopper", role="admin"),
        user_registered(other_admin, other_admin_email, "Edsger Dijkstra", role="admin"),
        user_registered(carl, carl_email, "Carl Gauss"),
        user_deleted(carl),
        # A name stored before the user service refused such names (issue 13).
        user_registered(mallory, mallory_email, f"{PHISHING}\u202e\u200b"),
    )
    notification = start_notification(start_service, sink)

    for to in (ada_email, admin_email, other_admin_email, carl_email, mallory_email):
        await wait_for_mail(sink, to, "Welcome to Choreo")
    [welcome] = await sink.messages(ada_email)
    assert welcome["subject"] == "Welcome to Choreo"
    assert welcome["from"]["email"] == "orders@choreo.local"
    assert welcome["personalizations"][0]["to"] == [{"email": ada_email, "name": "Ada Lovelace"}]
    assert [part["type"] for part in welcome["content"]] == ["text/plain", "text/html"]
    assert "Hi Ada Lovelace," in welcome["content"][0]["value"]
    # The stored name shows on one line, in the body and beside the address only.
    [phishing] = await sink.messages(mallory_email)
    assert phishing["subject"] == "Welcome to Choreo"
    one_line = "Your account is locked, verify at http://evil.example Bcc: x@evil.example"
    assert phishing["personalizations"] == [{"to": [{"email": mallory_email, "name": one_line}]}]
    assert f"Hi {one_line}," in phishing["content"][0]["value"]
    assert all(c not in str(phishing) for c in ("\r", "\u202e", "\u200b"))

    # Low stock goes to the admins only; later e-mails use the updated address; a deleted
    # user gets nothing more.
    product = new_id()
    ada_order, carl_order = new_id(), new_id()
    carl_confirmed = order_confirmed(carl_order, carl)
    await publish(
        kafka_bootstrap,
        topics,
        low_stock_detected(product, "Burr grinder", available=2, threshold=3),
        order_confirmed(ada_order, ada),
        carl_confirmed,
    )
    await wait_for_mail(sink, admin_email, "Low stock alert")
    await wait_for_mail(sink, other_admin_email, "Low stock alert")
    await wait_for_mail(sink, ada_new_email, "is confirmed")
    await eventually(lambda: applied(notification, carl_confirmed), "carl's order event applied")
    [low_stock] = [m for m in await sink.messages(admin_email) if "Low stock" in m["subject"]]
    text = low_stock["content"][0]["value"]
    assert "Hi Grace Hopper," in text
    assert "Burr grinder is running low" in text  # named in the body, not the subject
    assert "2 available, at or below its threshold of" in text
    assert f"/api/v1/products/{product}/stock" in text
    assert [m["subject"] for m in await sink.messages(ada_email)] == [welcome["subject"]]
    [confirmed] = await sink.messages(ada_new_email)
    assert "Hi Ada King," in confirmed["content"][0]["value"]
    assert await sink.subjects(carl_email) == ["Welcome to Choreo"]

    async with notification.client(signing_key.issue(ada)) as client:
        page = (await client.get("/api/v1/notifications")).json()
        assert [n["kind"] for n in page["items"]] == ["order_confirmed", "welcome"]
        assert page["next_cursor"] is None
        newest, oldest = page["items"]
        assert newest["title"] == confirmed["subject"]
        assert newest["body"] == confirmed["content"][0]["value"]
        assert newest["read_at"] is None

        first = (await client.get("/api/v1/notifications", params={"limit": 1})).json()
        second = (
            await client.get(
                "/api/v1/notifications", params={"limit": 1, "cursor": first["next_cursor"]}
            )
        ).json()
        assert [n["id"] for n in first["items"] + second["items"]] == [newest["id"], oldest["id"]]
        assert second["next_cursor"] is None

        assert (await client.post(f"/api/v1/notifications/{oldest['id']}/read")).status_code == 204
        assert (await client.post(f"/api/v1/notifications/{oldest['id']}/read")).status_code == 204
        read = (await client.get("/api/v1/notifications")).json()["items"]
        assert [n["read_at"] is not None for n in read] == [False, True]

        bad_cursor = await client.get("/api/v1/notifications", params={"cursor": "nonsense"})
        assert bad_cursor.status_code == 422
        assert bad_cursor.json()["error"]["code"] == "invalid_cursor"
        for limit in ("0", "101", "x"):
            response = await client.get("/api/v1/notifications", params={"limit": limit})
            assert response.status_code == 422
        for unknown in (new_id(), "not-a-uuid"):
            response = await client.post(f"/api/v1/notifications/{unknown}/read")
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "notification_not_found"

    # Someone else's notification is not theirs to list or mark.
    async with notification.client(signing_key.issue(admin, roles=["admin", "user"])) as client:
        mine = (await client.get("/api/v1/notifications")).json()["items"]
        assert [n["kind"] for n in mine] == ["low_stock", "welcome"]
        response = await client.post(f"/api/v1/notifications/{oldest['id']}/read")
        assert response.status_code == 404
    # A deleted user's token is refused outright (the kit's revoked users).
    async with notification.client(signing_key.issue(carl)) as client:
        response = await client.get("/api/v1/notifications")
        assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthenticated")
    async with notification.client() as anonymous:
        assert (await anonymous.get("/api/v1/notifications")).status_code == 401

    # The deleted user's details are gone; the contact is a tombstone.
    assert await query(
        notification.database_url, "SELECT email, full_name FROM contacts WHERE user_id = %s", carl
    ) == [(None, None)]


async def test_each_saga_notification_is_sent_once_whatever_the_order_of_events(
    start_service: StartService,
    sink: Sink,
    signing_key: SigningKey,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    dana, eve = new_id(), new_id()
    dana_email, eve_email = address("dana"), address("eve")
    happy, early, declined, refunded, gone = new_id(), new_id(), new_id(), new_id(), new_id()
    twice = [order_created(happy, dana), order_confirmed(happy, dana)]
    await publish(
        kafka_bootstrap,
        topics,
        user_registered(dana, dana_email, "Dana Scully"),
        # A happy saga, every record published twice (same ce_id).
        *twice,
        *twice,
        # Eve's order confirmed before her account is known to this service.
        order_confirmed(early, eve),
        order_created(early, eve),
        # A payment failure before its order is known here (then the cancellation, below).
        payment_failed(declined, "card_declined", "Your card was declined."),
        order_created(declined, dana),
        # A confirmed order the customer cancels (below), then its refund.
        order_created(refunded, dana, quantities=(3,)),
        order_confirmed(refunded, dana),
        user_registered(eve, eve_email, "Eve Moneypenny"),
    )
    notification = start_notification(start_service, sink)

    def ref(order_id: str) -> str:
        return "#" + order_id.replace("-", "")[:8].upper()

    # The cancellations once their orders were announced: order.create and order.event are
    # consumed concurrently, and an order seen cancelled is not announced any more (below).
    await wait_for_mail(sink, dana_email, ref(declined), f"We received your order {ref(refunded)}")
    cancelled_gone = order_cancelled(gone, dana, "TIMEOUT", charged=False)
    await publish(
        kafka_bootstrap,
        topics,
        order_cancelled(declined, dana, "PAYMENT_FAILED", charged=False),
        order_cancelled(refunded, dana, "CUSTOMER_REQUEST", charged=True),
        payment_refunded(refunded),
        cancelled_gone,
    )
    # An order seen cancelled first: its OrderCreated arrives late, and its confirmation after
    # the cancellation (as a replayed dead letter would). Neither contradicts "cancelled".
    await eventually(lambda: applied(notification, cancelled_gone), "the cancellation applied")
    late: list[Event[Record]] = [order_created(gone, dana), order_confirmed(gone, dana)]
    await publish(kafka_bootstrap, topics, *late)

    expected = {
        dana_email: [
            "Welcome to Choreo",
            f"We received your order {ref(happy)}",
            f"Your order {ref(happy)} is confirmed",
            f"We received your order {ref(declined)}",
            f"We could not take the payment for your order {ref(declined)}",
            f"Your order {ref(declined)} was cancelled",
            f"We received your order {ref(refunded)}",
            f"Your order {ref(refunded)} is confirmed",
            f"Your order {ref(refunded)} was cancelled",
            f"Your refund for order {ref(refunded)} is on its way",
            f"Your order {ref(gone)} was cancelled",
        ],
        eve_email: [
            "Welcome to Choreo",
            f"We received your order {ref(early)}",
            f"Your order {ref(early)} is confirmed",
        ],
    }
    for to, subjects in expected.items():
        await wait_for_mail(sink, to, *subjects, timeout=45)
    for event in late:
        await eventually(lambda e=event: applied(notification, e), f"{event.type} applied")
    await eventually(
        lambda: _inbox_holds(notification, 16), "every distinct event applied", timeout=30
    )
    await asyncio.sleep(1.0)  # a second e-mail of any duplicate would be here by now
    for to, subjects in expected.items():
        assert Counter(await sink.subjects(to)) == Counter(subjects)

    bodies = {m["subject"]: m["content"][0]["value"] for m in await sink.messages(dana_email)}
    words = {subject: " ".join(body.split()) for subject, body in bodies.items()}
    assert "3 items for 37.50 USD" in words[f"We received your order {ref(happy)}"]
    assert "We charged 37.50 USD" in words[f"Your order {ref(happy)} is confirmed"]
    assert (
        "because your card was declined"
        in words[f"We could not take the payment for your order {ref(declined)}"]
    )
    assert (
        "cancelled because the payment did not go through"
        in words[f"Your order {ref(declined)} was cancelled"]
    )
    assert "You have not been charged" in words[f"Your order {ref(declined)} was cancelled"]
    assert (
        "cancelled because you asked us to cancel it"
        in words[f"Your order {ref(refunded)} was cancelled"]
    )
    assert "will be refunded" in words[f"Your order {ref(refunded)} was cancelled"]
    assert "We refunded 37.50 USD" in words[f"Your refund for order {ref(refunded)} is on its way"]
    assert (
        "cancelled because it could not be completed in time"
        in words[f"Your order {ref(gone)} was cancelled"]
    )

    rows = await query(
        notification.database_url, "SELECT status, attempts, count(*) FROM deliveries GROUP BY 1, 2"
    )
    assert rows == [("sent", 1, 14)]
    # The late order is still known, so its payment events would find their customer.
    assert await query(
        notification.database_url, "SELECT user_id FROM orders WHERE order_id = %s", gone
    ) == [(dana,)]
    async with notification.client(signing_key.issue(dana)) as client:
        page = (await client.get("/api/v1/notifications", params={"limit": 100})).json()
    assert Counter(n["title"] for n in page["items"]) == Counter(expected[dana_email])


async def test_a_payment_awaiting_3ds_asks_the_customer_to_confirm_it_without_a_secret(
    start_service: StartService,
    sink: Sink,
    signing_key: SigningKey,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    """PaymentActionRequired tells the customer to confirm the payment in the app: once, with
    the amount and no client secret or link; not at all once the order is known cancelled."""
    fay, fay_email = new_id(), address("fay")
    waiting, abandoned = new_id(), new_id()
    secret = "pi_3ds_secret_never_in_a_message"
    cancelled = order_cancelled(abandoned, fay, "TIMEOUT", charged=False)
    await publish(
        kafka_bootstrap,
        topics,
        user_registered(fay, fay_email, "Fay Wray"),
        order_created(waiting, fay),
        order_created(abandoned, fay),
        cancelled,
    )
    notification = start_notification(start_service, sink)
    await eventually(lambda: applied(notification, cancelled), "the cancellation applied")
    action = make.payment_action_required(order_id=waiting, client_secret=secret, amount=2499)
    late = make.payment_action_required(order_id=abandoned, client_secret=secret)
    await publish(kafka_bootstrap, topics, action, action, late)

    reference = "#" + waiting.replace("-", "")[:8].upper()
    await wait_for_mail(sink, fay_email, f"Confirm the payment for your order {reference}")
    await eventually(lambda: applied(notification, late), "the late action applied")
    await asyncio.sleep(1.0)  # a second e-mail would be here by now
    confirms = [m for m in await sink.messages(fay_email) if "Confirm the payment" in m["subject"]]
    assert len(confirms) == 1
    body = " ".join(confirms[0]["content"][0]["value"].split())
    assert "confirm the payment of 24.99 USD" in body
    assert secret not in str(confirms[0])
    assert "http" not in body
    async with notification.client(signing_key.issue(fay)) as client:
        page = (await client.get("/api/v1/notifications", params={"limit": 100})).json()
    assert [n["title"] for n in page["items"] if "Confirm" in n["title"]] == [
        f"Confirm the payment for your order {reference}"
    ]


async def _inbox_holds(notification: ServiceProcess, count: int) -> bool:
    rows = await query(notification.database_url, "SELECT count(*) FROM inbox")
    return bool(rows[0][0] == count)


async def test_a_sendgrid_outage_delays_the_email_and_dead_letters_nothing(
    start_service: StartService,
    sink: Sink,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    frank, gina = new_id(), new_id()
    frank_email, gina_email = address("frank"), address("gina")
    await publish(
        kafka_bootstrap,
        topics,
        user_registered(frank, frank_email, "Frank Herbert"),
        user_registered(gina, gina_email, "Gina Torres"),
    )
    notification = start_notification(
        start_service,
        sink,
        NOTIFICATION_CONSUMER_MAX_ATTEMPTS="3",
        NOTIFICATION_CONSUMER_RETRY_INITIAL_SECONDS="0.05",
        NOTIFICATION_CONSUMER_RETRY_MAX_SECONDS="0.2",
    )
    await wait_for_mail(sink, frank_email, "Welcome")
    await wait_for_mail(sink, gina_email, "Welcome")

    # SendGrid answers 503 until it is healed: far more attempts than max_attempts (3).
    await sink.fail(503, count=None)
    frank_order = new_id()
    gina_order = key_in_partition_of(frank_order)
    await publish(
        kafka_bootstrap,
        topics,
        order_confirmed(frank_order, frank),
        order_confirmed(gina_order, gina),
    )
    async with asyncio.timeout(30):
        while (await retries_of(notification)) < 20:
            await asyncio.sleep(0.2)
    async with notification.client() as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 200  # the API still serves
    assert "waiting out an outage" in ready.json()["checks"]["consumer"]
    assert "EmailUnavailableError" in ready.json()["checks"]["consumer"]
    assert await sink.subjects(frank_email) == ["Welcome to Choreo"]

    await sink.heal()
    await wait_for_mail(sink, frank_email, "is confirmed")
    await wait_for_mail(sink, gina_email, "is confirmed")
    assert "dead_lettered" not in await records_handled(notification, f"{topics}order.event")
    async with notification.client() as client:
        assert (await client.get("/readyz")).json()["checks"]["consumer"] == "ok"


async def retries_of(service: ServiceProcess) -> float:
    async with service.client() as client:
        metrics = (await client.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("choreo_consumer_retries_total{") and 'failure="outage"' in line
    )


async def test_an_email_sendgrid_refuses_is_dead_lettered_at_once_and_replayed_once(
    start_service: StartService,
    sink: Sink,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    frank, gina = new_id(), new_id()
    frank_email, gina_email = address("frank"), address("gina")
    await publish(
        kafka_bootstrap,
        topics,
        user_registered(frank, frank_email, "Frank Herbert"),
        user_registered(gina, gina_email, "Gina Torres"),
    )
    notification = start_notification(start_service, sink)
    await wait_for_mail(sink, frank_email, "Welcome")
    await wait_for_mail(sink, gina_email, "Welcome")

    # SendGrid refuses the next send with a 400, which can never pass: Frank's e-mail. Gina's
    # order is in the same partition, behind Frank's.
    await sink.fail(400, count=1)
    frank_order = new_id()
    gina_order = key_in_partition_of(frank_order)
    failing = order_confirmed(frank_order, frank)
    await publish(kafka_bootstrap, topics, failing, order_confirmed(gina_order, gina))

    [dead] = await read_records(kafka_bootstrap, f"{topics}notification.dlq", 1)
    [original] = [
        record
        for record in await read_records(kafka_bootstrap, f"{topics}order.event", 2)
        if record.key == frank_order.encode()
    ]
    assert (dead.key, dead.value) == (original.key, original.value)
    headers = dict(dead.headers)
    assert list(dead.headers[: len(original.headers)]) == list(original.headers)
    assert headers["ce_id"] == failing.id.encode()
    assert headers["dlq.original.topic"] == f"{topics}order.event".encode()
    assert headers["dlq.original.partition"] == str(original.partition).encode()
    assert headers["dlq.original.offset"] == str(original.offset).encode()
    assert headers["dlq.consumer"] == b"notification_service"
    assert headers["dlq.error.type"] == b"EmailRefusedError"
    assert b"HTTP 400" in headers["dlq.error.message"]
    assert headers["dlq.attempts"] == b"1"
    assert headers["dlq.failed_at"]

    # The partition moved on: Gina's e-mail went out; Frank got none.
    await wait_for_mail(sink, gina_email, "is confirmed")
    assert await sink.subjects(frank_email) == ["Welcome to Choreo"]
    [(status, _)] = await query(
        notification.database_url,
        "SELECT status, attempts FROM deliveries WHERE recipient = %s AND kind = %s",
        frank,
        "order_confirmed",
    )
    assert status == "failed"

    # `choreo dlq replay`, twice: the dead letter to the notification service's retry topic.
    # Once sends the e-mail; twice sends nothing more (the inbox skips the duplicate).
    producer = kafka.producer(kafka_bootstrap)
    await producer.start()
    entry = f"{topics}notification.dlq:{dead.partition}:{dead.offset}"
    try:
        for _ in range(2):
            await producer.send_and_wait(
                f"{topics}notification.retry",
                dead.value,
                key=dead.key,
                headers=replay_headers(dead.headers, entry),
            )
    finally:
        await producer.stop()
    await wait_for_mail(sink, frank_email, "is confirmed")
    async with asyncio.timeout(30):
        while await records_handled(notification, f"{topics}notification.retry") != {
            "applied": 1,
            "duplicate": 1,
        }:
            await asyncio.sleep(0.2)
    await publish(
        kafka_bootstrap,
        topics,
        order_cancelled(frank_order, frank, "CUSTOMER_REQUEST", charged=True),
    )
    await wait_for_mail(sink, frank_email, "was cancelled")
    subjects = await sink.subjects(frank_email)
    assert Counter(subjects) == Counter(
        [
            "Welcome to Choreo",
            f"Your order #{frank_order.replace('-', '')[:8].upper()} is confirmed",
            f"Your order #{frank_order.replace('-', '')[:8].upper()} was cancelled",
        ]
    )
    [(status, _)] = await query(
        notification.database_url,
        "SELECT status, attempts FROM deliveries WHERE recipient = %s AND kind = %s",
        frank,
        "order_confirmed",
    )
    assert status == "sent"
