"""Charges and refunds driven by saga events, against real PostgreSQL, the broker and
localstripe: one charge per order whatever the order and duplication of its events, refunds
on cancellation, and no second charge after the process dies between Stripe and its commit."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

import httpx

from choreo.auth import SigningKey
from choreo.events import Event
from choreo.testing import ServiceProcess, StartService, collect_events, eventually, publish, query

from .conftest import (
    DECLINED_ON_CHARGE,
    NEEDS_AUTHENTICATION,
    VISA,
    Localstripe,
    add_card,
    card,
    new_id,
    order_cancelled,
    order_created,
    stock_reserved,
)


async def settled_payment_events(
    payment: ServiceProcess,
    kafka_bootstrap: str,
    topics: str,
    *,
    applied: int,
    screenings: dict[str, list[Event]] | None = None,
) -> dict[str, list[Event]]:
    """Every payment outcome (PaymentSucceeded, Failed, Refunded), by order, once `applied`
    events were consumed and all published; each order's RiskAssessed go to `screenings`."""

    async def all_applied() -> bool:
        rows = await query(payment.database_url, "SELECT count(*) FROM inbox")
        return bool(rows[0][0] == applied)

    async def all_published() -> bool:
        rows = await query(
            payment.database_url, "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        return bool(rows[0][0] == 0)

    await eventually(all_applied, f"the service applied {applied} events", timeout=60)
    await eventually(all_published, "the service published its events")
    total = (await query(payment.database_url, "SELECT count(*) FROM outbox"))[0][0]
    events = await collect_events(
        kafka_bootstrap, f"{topics}payment.event", until=lambda seen: len(seen) >= total
    )
    by_order: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.type == "RiskAssessed":
            if screenings is not None:
                screenings.setdefault(event.subject, []).append(event)
            continue
        by_order[event.subject].append(event)
    return by_order


async def is_down(process: ServiceProcess) -> bool:
    try:
        async with httpx.AsyncClient(base_url=process.url, timeout=1.0) as probe:
            await probe.get("/healthz")
    except httpx.TransportError:
        return True
    return False


async def test_each_order_is_charged_once_whatever_the_order_of_its_events(
    start_service: StartService,
    signing_key: SigningKey,
    localstripe: Localstripe,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    payment = start_service("payment")
    payer, decliner, authenticator, cardless = new_id(), new_id(), new_id(), new_id()
    for user, number in [
        (payer, VISA),
        (decliner, DECLINED_ON_CHARGE),
        (authenticator, NEEDS_AUTHENTICATION),
    ]:
        async with payment.client(signing_key.issue(user)) as client:
            await add_card(client, card(number))

    in_order, reversed_, duplicated = new_id(), new_id(), new_id()
    declined, unauthenticated, without_card = new_id(), new_id(), new_id()
    redelivered = stock_reserved(duplicated)
    await publish(
        kafka_bootstrap,
        topics,
        order_created(in_order, payer, amount=1999),
        stock_reserved(in_order),
        stock_reserved(reversed_),
        order_created(reversed_, payer, amount=2999),
        order_created(duplicated, payer, amount=3999),
        redelivered,
        redelivered,  # the same record twice (same ce_id)
        stock_reserved(duplicated),  # the same fact in a second event
        order_created(declined, decliner),
        stock_reserved(declined),
        order_created(unauthenticated, authenticator),
        stock_reserved(unauthenticated),
        order_created(without_card, cardless),
        stock_reserved(without_card),
    )
    screenings: dict[str, list[Event]] = {}
    events = await settled_payment_events(
        payment, kafka_bootstrap, topics, applied=13, screenings=screenings
    )
    # Every charged or declined card was screened once first; an order with no card was not,
    # and one waiting for its customer's authentication publishes its decision with its outcome.
    assert {order: [e.record.decision for e in found] for order, found in screenings.items()} == {
        order: ["APPROVE"] for order in (in_order, reversed_, duplicated, declined)
    }

    for order, amount in [(in_order, 1999), (reversed_, 2999), (duplicated, 3999)]:
        [succeeded] = events[order]
        assert succeeded.type == "PaymentSucceeded"
        assert (succeeded.record.amount, succeeded.record.currency) == (amount, "USD")
        [charge] = await localstripe.successful_charges(order)
        assert charge.amount == amount
        assert charge.payment_intent == succeeded.record.provider_payment_id
        assert len(await localstripe.intents_of(order)) == 1

    # 3-D Secure: the charge waits for the customer, and says what their client needs.
    [waiting] = events[unauthenticated]
    assert waiting.type == "PaymentActionRequired"
    [intent] = await localstripe.intents_of(unauthenticated)
    assert waiting.record.provider_payment_id == intent.id
    assert waiting.record.client_secret == intent.client_secret
    assert waiting.record.next_action_type == "use_stripe_sdk"
    assert intent.status == "requires_action"

    for order, code in [
        (declined, "card_declined"),
        (without_card, "no_payment_method"),
    ]:
        [failed] = events[order]
        assert failed.type == "PaymentFailed"
        assert failed.record.decline_code == code
        assert failed.record.message
        assert await localstripe.successful_charges(order) == []
    assert events[declined][0].record.payment_id is not None
    assert events[without_card][0].record.payment_id is None
    assert await localstripe.intents_of(without_card) == []

    async with payment.client(signing_key.issue(payer)) as client:
        mine = (await client.get("/api/v1/payments")).json()
        admin_forbidden = await client.get("/api/v1/admin/payments")
    assert {(p["order_id"], p["status"], p["amount"]) for p in mine["items"]} == {
        (in_order, "SUCCEEDED", 1999),
        (reversed_, "SUCCEEDED", 2999),
        (duplicated, "SUCCEEDED", 3999),
    }
    created = [p["created_at"] for p in mine["items"]]
    assert created == sorted(created, reverse=True)  # newest first
    assert admin_forbidden.status_code == 403
    async with payment.client(signing_key.issue(decliner)) as client:
        [failed_payment] = (await client.get("/api/v1/payments")).json()["items"]
    assert (failed_payment["status"], failed_payment["decline_code"]) == ("FAILED", "card_declined")

    async with payment.client(signing_key.issue(new_id(), roles=["admin"])) as admin:
        first = (await admin.get("/api/v1/admin/payments", params={"limit": 4})).json()
        rest = (
            await admin.get(
                "/api/v1/admin/payments", params={"limit": 4, "cursor": first["next_cursor"]}
            )
        ).json()
    listed = [p["order_id"] for p in first["items"] + rest["items"]]
    assert sorted(listed) == sorted(
        [in_order, reversed_, duplicated, declined, unauthenticated, without_card]
    )
    assert rest["next_cursor"] is None
    assert {p["user_id"] for p in first["items"] + rest["items"]} == {
        payer,
        decliner,
        authenticator,
        cardless,
    }
    # The card each attempt charged, by Stripe's fingerprint (one per card number): what an
    # admin puts on the risk block-list.
    fingerprints = {p["order_id"]: p["card_fingerprint"] for p in first["items"] + rest["items"]}
    assert fingerprints[without_card] is None
    assert fingerprints[in_order] == fingerprints[reversed_] == fingerprints[duplicated]
    assert fingerprints[in_order] is not None
    assert fingerprints[declined] not in (None, fingerprints[in_order])


async def test_a_cancelled_order_is_refunded_or_never_charged_nor_one_close_to_its_deadline(
    start_service: StartService,
    signing_key: SigningKey,
    localstripe: Localstripe,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    payment = start_service("payment")  # PAYMENT_CHARGE_MARGIN_SECONDS: 10 by default
    user = new_id()
    async with payment.client(signing_key.issue(user)) as client:
        await add_card(client, card(VISA))
    refunded, never_charged, too_late = new_id(), new_id(), new_id()

    await publish(kafka_bootstrap, topics, order_created(refunded, user), stock_reserved(refunded))
    await collect_events(
        kafka_bootstrap,
        f"{topics}payment.event",
        until=lambda seen: any(e.subject == refunded for e in seen),
    )
    # Cancelled after it was charged (twice over), and an order cancelled before its stock
    # was reserved: the cancellation is applied first, then the reservation arrives.
    await publish(
        kafka_bootstrap,
        topics,
        order_cancelled(refunded, user, previous_status="CONFIRMED", charged=True),
        order_cancelled(refunded, user, previous_status="CONFIRMED", charged=True),
        order_created(never_charged, user),
        order_cancelled(never_charged, user, previous_status="PENDING", charged=False),
    )

    async def cancellation_applied() -> bool:
        rows = await query(
            payment.database_url,
            "SELECT cancelled FROM order_payments WHERE order_id = %s",
            never_charged,
        )
        return rows == [(True,)]

    await eventually(cancellation_applied, "the early cancellation is recorded")
    await publish(
        kafka_bootstrap,
        topics,
        stock_reserved(never_charged),
        # Five seconds before its deadline: a charge now could land after it.
        order_created(too_late, user, deadline_in=timedelta(seconds=5)),
        stock_reserved(too_late),
    )
    events = await settled_payment_events(payment, kafka_bootstrap, topics, applied=9)

    succeeded, refund = events[refunded]
    assert (succeeded.type, refund.type) == ("PaymentSucceeded", "PaymentRefunded")
    assert refund.record.amount == 2500
    assert refund.record.payment_id == succeeded.record.payment_id
    [charge] = await localstripe.successful_charges(refunded)
    [stripe_refund] = await localstripe.refunds_of(str(charge.payment_intent))
    assert stripe_refund.id == refund.record.provider_refund_id
    assert stripe_refund.amount == 2500

    assert never_charged not in events
    assert await localstripe.intents_of(never_charged) == []

    # Given up in silence: no event (the order service's sweep cancels it, TIMEOUT), no intent.
    assert too_late not in events
    assert await localstripe.intents_of(too_late) == []
    [(status, reason)] = await query(
        payment.database_url,
        "SELECT status, no_charge_reason FROM order_payments WHERE order_id = %s",
        too_late,
    )
    assert status == "EXPIRED"
    assert reason.startswith("no charge: the order's deadline (")
    assert "less the charge margin (10 s) had passed at" in reason

    # Orders never charged are no payments, for the customer or an admin.
    async with payment.client(signing_key.issue(user)) as client:
        [listed] = (await client.get("/api/v1/payments")).json()["items"]
    assert (listed["order_id"], listed["status"], listed["refunded_amount"]) == (
        refunded,
        "REFUNDED",
        2500,
    )
    admin = signing_key.issue(new_id(), roles=("admin", "user"))
    async with payment.client(admin) as client:
        response = await client.get("/api/v1/admin/payments")
    assert response.status_code == 200, response.text
    assert [p["order_id"] for p in response.json()["items"]] == [refunded]


async def test_a_crash_after_stripe_confirmed_never_charges_twice(
    start_service: StartService,
    signing_key: SigningKey,
    localstripe: Localstripe,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    payment = start_service("payment", PAYMENT_FAULT_KILL_AFTER_CONFIRM="true")
    user, order = new_id(), new_id()
    async with payment.client(signing_key.issue(user)) as client:
        await add_card(client, card(VISA))
    await publish(kafka_bootstrap, topics, order_created(order, user), stock_reserved(order))

    await eventually(
        lambda: is_down(payment), "the service killed itself after confirming the charge"
    )
    # Stripe charged the card; the service recorded nothing but the intent (phase one).
    assert len(await localstripe.successful_charges(order)) == 1
    assert await query(payment.database_url, "SELECT status FROM order_payments") == [("NONE",)]
    [(intent_id,)] = await query(
        payment.database_url, "SELECT provider_payment_id FROM charge_attempts"
    )

    restarted = start_service("payment")  # same database and port, no fault
    events = await settled_payment_events(restarted, kafka_bootstrap, topics, applied=2)

    [succeeded] = events[order]
    assert succeeded.type == "PaymentSucceeded"
    assert succeeded.record.provider_payment_id == intent_id
    [charge] = await localstripe.successful_charges(order)
    assert charge.payment_intent == intent_id
    assert len(await localstripe.intents_of(order)) == 1


async def test_an_intent_orphaned_by_a_crash_is_cancelled_and_none_is_left_open(
    start_service: StartService,
    signing_key: SigningKey,
    localstripe: Localstripe,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    """The service dies between creating an intent at Stripe and committing its id (issue
    12.5): once restarted, the order is charged once, with a new intent, and the orphan is
    cancelled; a declined charge's intent is cancelled too. No intent is left open, and an
    intent that is not the service's own is left alone."""
    payment = start_service("payment", PAYMENT_FAULT_KILL_AFTER_CREATE="true")
    payer, decliner, order, declined = new_id(), new_id(), new_id(), new_id()
    for user, number in [(payer, VISA), (decliner, DECLINED_ON_CHARGE)]:
        async with payment.client(signing_key.issue(user)) as client:
            await add_card(client, card(number))
    # Another system's intent on the same account, naming an order this service never saw.
    foreign = await localstripe.client.v1.payment_intents.create_async(
        params={"amount": 500, "currency": "usd", "metadata": {"order_id": new_id()}}
    )
    await publish(kafka_bootstrap, topics, order_created(order, payer), stock_reserved(order))
    await eventually(lambda: is_down(payment), "the service killed itself after the create")
    [orphan] = await localstripe.intents_of(order)
    assert orphan.status == "requires_confirmation"
    assert await query(payment.database_url, "SELECT count(*) FROM charge_attempts") == [(0,)]

    restarted = start_service(  # same database and port, no fault, a sweep every second
        "payment",
        PAYMENT_INTENT_SWEEP_INTERVAL_SECONDS="1",
        PAYMENT_INTENT_SWEEP_GRACE_SECONDS="1",
    )
    await publish(
        kafka_bootstrap, topics, order_created(declined, decliner), stock_reserved(declined)
    )
    events = await settled_payment_events(restarted, kafka_bootstrap, topics, applied=4)
    [succeeded] = events[order]
    assert succeeded.type == "PaymentSucceeded"
    charged = succeeded.record.provider_payment_id
    assert charged != orphan.id
    [failed] = events[declined]
    assert failed.type == "PaymentFailed"

    async def statuses() -> dict[str, str]:
        intents = await localstripe.intents_of(order) + await localstripe.intents_of(declined)
        return {intent.id: intent.status for intent in intents}

    async def none_open() -> bool:
        return sorted((await statuses()).values()) == ["canceled", "canceled", "succeeded"]

    await eventually(none_open, "the orphan and the declined intent are cancelled", timeout=15)
    assert (await statuses())[orphan.id] == "canceled"
    assert (await statuses())[charged] == "succeeded"
    [charge] = await localstripe.successful_charges(order)
    assert charge.payment_intent == charged
    assert await localstripe.successful_charges(declined) == []
    untouched = await localstripe.client.v1.payment_intents.retrieve_async(foreign.id)
    assert untouched.status == foreign.status != "canceled"
