"""The invariants only the outside systems can prove: what Stripe charged and refunded, and the
order-confirmed notices (e-mail, SMS) the customers got."""

from __future__ import annotations

from collections import Counter

from choreo.cli.output import moment
from choreo.cli.saga import money
from choreo.cli.verify.facts import (
    CONFIRMED,
    NOTIFICATION_DB,
    ORDER_DB,
    PAYMENT_DB,
    SINK,
    STRIPE,
    TERMINAL,
    Facts,
)
from choreo.cli.verify.providers import Intent
from choreo.cli.verify.report import CheckResult

OPEN = frozenset({"requires_confirmation", "processing", "requires_capture"})
"""Intent statuses in which money can still move without the customer: the payment service
must confirm or cancel them (or, for an order it holds for review, capture or cancel the
authorisation once the review ends). A declined intent waits for a new card, which never
comes."""
ORDER_CONFIRMED_KIND = "order_confirmed"


def stripe_charges(facts: Facts) -> CheckResult:
    """At Stripe: no order charged twice, no intent left open, every succeeded charge of a
    confirmed order or refunded, and each charge the payment service recorded is there."""
    result = CheckResult("stripe", "charges at Stripe")
    if STRIPE in facts.skipped:
        result.skipped = f"skipped: {facts.skipped[STRIPE]}"
        return result
    if not facts.require(result, STRIPE, ORDER_DB, PAYMENT_DB):
        return result
    intents = facts.intents or []
    orders = facts.orders or {}
    # An intent created since --since, or of an order placed since (it may be a moment older).
    audited = [
        i
        for i in intents
        if i.order_id is not None and (facts.in_scope(i.created) or i.order_id in orders)
    ]
    payments = facts.payments or {}
    succeeded: dict[str, list[Intent]] = {}
    for intent in audited:
        payment = payments.get(str(intent.order_id))
        if intent.status == "succeeded":
            succeeded.setdefault(str(intent.order_id), []).append(intent)
        elif (
            intent.status == "requires_capture"
            and payment is not None
            and (payment.status == "HELD")
        ):
            continue  # the authorisation of an order held for review: the review ends it
        elif (
            intent.status == "requires_action"
            and payment is not None
            and payment.status == "AWAITING_ACTION"
        ):
            continue  # waits for its customer (3-D Secure): the order's deadline ends it
        elif intent.status in OPEN and facts.settled(intent.created):
            result.add(
                intent.id,
                "payment intent left open",
                "succeeded, canceled or declined",
                f"{intent.status} since {moment(intent.created)} (order {intent.order_id})",
            )
    for order_id, charges in succeeded.items():
        if len(charges) > 1:
            result.add(
                order_id,
                "order charged more than once",
                "at most one succeeded charge",
                f"{len(charges)} succeeded charges: "
                + ", ".join(f"{c.id} ({money(c.amount, c.currency)})" for c in charges),
            )
        for charge in charges:
            _judge_charge(result, facts, charge)
    for order in orders.values():
        if order.status in CONFIRMED and facts.settled(order.updated_at):
            kept = [c for c in succeeded.get(order.id, []) if c.refunded < c.amount]
            if not kept:
                tried = [f"{i.id} {i.status}" for i in audited if i.order_id == order.id]
                result.add(
                    order.id,
                    f"{order.status} order has no charge at Stripe",
                    f"one succeeded charge of {money(order.total_amount, order.currency)}",
                    ", ".join(tried) or "no intent",
                )
    _recorded_charges(result, facts, {intent.id: intent for intent in intents})
    open_intents = sum(1 for i in audited if i.status in OPEN)
    result.summary = (
        f"{len(audited)} intent(s) of orders, {sum(map(len, succeeded.values()))} succeeded, "
        f"{open_intents} open"
    )
    result.facts = {"intents": len(intents), "audited": len(audited), "open": open_intents}
    return result


def _judge_charge(result: CheckResult, facts: Facts, charge: Intent) -> None:
    """A succeeded charge must be of a confirmed order, or refunded in full."""
    if charge.refunded >= charge.amount:
        return
    order_id = str(charge.order_id)
    order = (facts.orders or {}).get(order_id)
    refunded = money(charge.refunded, charge.currency)
    refunded += f" of {money(charge.amount, charge.currency)}"
    if order is None:
        if not facts.knows_order(order_id) and facts.settled(charge.created):
            result.add(
                charge.id,
                f"charge for order {order_id}, which the order service does not know",
                "refunded in full",
                f"{refunded} refunded",
            )
    elif order.status == "CANCELLED" and facts.settled(order.updated_at):
        result.add(
            charge.id,
            f"charge of CANCELLED({order.cancel_reason}) order {order_id} not refunded",
            "refunded in full",
            f"{refunded} refunded",
        )


def _recorded_charges(result: CheckResult, facts: Facts, intents: dict[str, Intent]) -> None:
    """Each charge and refund the payment service recorded is what Stripe says."""
    for payment in (facts.payments or {}).values():
        intent_id = payment.provider_payment_id
        if (
            payment.status not in ("SUCCEEDED", "REFUNDED")
            or intent_id is None
            or not facts.in_scope(payment.created_at)
        ):
            continue
        intent = intents.get(intent_id)
        if intent is None or intent.status != "succeeded":
            result.add(
                payment.order_id,
                f"payment recorded {payment.status} a charge Stripe does not show succeeded",
                f"{intent_id} succeeded",
                f"{intent_id} {intent.status}" if intent else f"no intent {intent_id}",
            )
        elif payment.status == "REFUNDED" and intent.refunded < payment.refunded_amount:
            result.add(
                payment.order_id,
                "payment recorded a refund Stripe does not show",
                f"{money(payment.refunded_amount, payment.currency)} refunded on {intent_id}",
                f"{money(intent.refunded, intent.currency)} refunded",
            )


def confirmation_emails(facts: Facts) -> CheckResult:
    """Exactly one order-confirmed notice per confirmed order on each channel outside the app
    the customer chose for order updates (e-mail by default; SMS, or e-mail instead when the
    SMS was skipped for want of a phone number), none for an order never confirmed. E-mails are
    counted at the e-mail sink where it can be read, else from the notification service's
    deliveries; SMS from its deliveries. An order the sink has no e-mail of, whose e-mail the
    deliveries record as sent, counts that one: the sink keeps its messages in memory, so after
    a restart of the stack it holds none of the e-mails sent before.

    The channels chosen are the customer's preferences of today, unless they changed them after
    the order's last change: then those the notification service chose at the time (the
    channels of its deliveries for the order's confirmation)."""
    result = CheckResult(
        "emails", "one confirmation notice per confirmed order, on the channels chosen"
    )
    if not facts.require(result, ORDER_DB, NOTIFICATION_DB) or facts.notifications is None:
        return result
    orders = facts.orders or {}
    deliveries = facts.notifications.confirmed_deliveries
    mailed: Counter[str] = Counter()
    delivered: Counter[str] = Counter()  # e-mails the deliveries record as sent
    texted: Counter[str] = Counter()
    sms_skipped: set[str] = set()
    recorded: dict[str, set[str]] = {}  # order id -> the channels its deliveries went by
    for order in orders.values():
        for event in order.confirmed_event_ids:
            for channel, status in deliveries.get(event, ()):
                recorded.setdefault(order.id, set()).add(channel)
                if channel == "sms":
                    texted[order.id] += status == "sent"
                    if status == "skipped":
                        sms_skipped.add(order.id)
                else:
                    delivered[order.id] += status == "sent"
    if facts.emails is None:
        mailed = delivered
    else:
        source = "e-mails at the sink"
        order_of_event = {
            event: order.id for order in orders.values() for event in order.confirmed_event_ids
        }
        for email in facts.emails:
            if email.kind == ORDER_CONFIRMED_KIND:
                order_id = order_of_event.get(email.event_id or "") or email.order_id
                if order_id is not None:
                    mailed[order_id] += 1
        for order_id, sent in delivered.items():  # sent before the sink (re)started
            if not mailed[order_id]:
                mailed[order_id] = sent
    if facts.emails is None:
        source = f"the notification service's deliveries ({SINK}: {facts.skipped.get(SINK)})"
    chosen_by = facts.notifications.order_update_channels
    judged = 0
    for order in orders.values():
        if order.status not in TERMINAL or not facts.settled(order.updated_at):
            continue
        judged += 1
        emails, texts = mailed[order.id], texted[order.id]
        user = str(order.user_id)
        chosen = chosen_by.get(user, frozenset({"email"}))
        changed_at = facts.notifications.preferences_changed_at.get(user)
        if changed_at is not None and changed_at > order.updated_at and order.id in recorded:
            chosen = frozenset(recorded[order.id])
        by_sms = "sms" in chosen and order.id not in sms_skipped
        by_email = "email" in chosen or ("sms" in chosen and not by_sms)
        wanted = {"e-mail": (emails, by_email), "SMS": (texts, by_sms)}
        if order.status in CONFIRMED and order.user_id in facts.notifications.unreachable_users:
            expected = "at most one (the customer has no address to write to)"
            fine = emails <= 1 and texts <= 1
        elif order.status in CONFIRMED:
            expected = (
                " and ".join(f"exactly one {name}" for name, (_, on) in wanted.items() if on)
                or "none (the customer turned order updates off outside the app)"
            )
            fine = all(count == (1 if on else 0) for count, on in wanted.values())
        elif order.confirmed_event_ids:
            expected = "at most one (confirmed, then cancelled)"
            fine = emails <= 1 and texts <= 1
        else:
            expected, fine = "none (never confirmed)", emails == 0 and texts == 0
        if fine:
            continue
        shown = {name: count for name, (count, on) in wanted.items() if count or on}
        worst = max(shown.values(), default=0)
        what = f"order-confirmed notice sent {worst} times"
        if worst == 0:
            what = "order-confirmed notice missing"
        elif order.status not in CONFIRMED and not order.confirmed_event_ids:
            what = "order-confirmed notice for an order never confirmed"
        actual = ", ".join(
            f"{count} e-mail(s)" if name == "e-mail" else f"{count} SMS"
            for name, count in shown.items()
        )
        result.add(
            order.id,
            f"{what} ({order.status})",
            f"{expected} order-confirmed notice",
            actual or "0 e-mail(s)",
        )
    confirmed = sum(1 for order in orders.values() if order.status in CONFIRMED)
    result.summary = f"{judged} ended order(s) judged ({confirmed} confirmed), from {source}"
    result.facts = {"judged": judged, "confirmed": confirmed, "source": source}
    return result
