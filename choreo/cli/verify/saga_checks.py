"""The saga's invariants over the services' own rows (DESIGN.md §4, docs/saga.md): every order
ends, the services agree on how it ended, and stock is conserved."""

from __future__ import annotations

from choreo.cli.output import moment
from choreo.cli.saga import money
from choreo.cli.verify.databases import Order, Payment, Reservation
from choreo.cli.verify.facts import (
    CONFIRMED,
    INVENTORY_DB,
    ORDER_DB,
    PAYMENT_DB,
    TERMINAL,
    Facts,
    seconds,
)
from choreo.cli.verify.report import CheckResult

HOLDING = frozenset({"RESERVED", "COMMITTED"})
"""Reservation statuses that hold stock."""
RELEASED = "stock released (RELEASED, REJECTED or a tombstone)"
NO_CHARGE = "no charge, or a full refund"


def orders_terminal(facts: Facts) -> CheckResult:
    """Every order CONFIRMED or CANCELLED (or later), or still inside its deadline + grace."""
    result = CheckResult("orders-terminal", "orders terminal or in time")
    if not facts.require(result, ORDER_DB) or facts.orders is None:
        return result
    terminal = in_time = 0
    for order in facts.orders.values():
        if order.status in TERMINAL:
            terminal += 1
        elif facts.now <= order.deadline + facts.grace:
            in_time += 1
        else:
            result.add(
                order.id,
                "order not ended past its deadline",
                f"CONFIRMED or CANCELLED by its deadline {moment(order.deadline)} "
                f"(+ {seconds(facts.grace)} grace)",
                f"{order.status}, {seconds(facts.now - order.deadline)} past the deadline",
            )
    stuck = len(facts.orders) - terminal - in_time
    result.summary = f"{len(facts.orders)} order(s): {terminal} ended, {in_time} in time"
    result.facts = {"orders": len(facts.orders), "ended": terminal, "in_time": in_time}
    result.facts["stuck"] = stuck
    return result


def services_agree(facts: Facts) -> CheckResult:
    """Inventory and payment agree with how each settled order ended; neither holds stock or
    money for an order the order service does not know."""
    result = CheckResult("services-agree", "services agree on each order")
    if not facts.require(result, ORDER_DB, INVENTORY_DB, PAYMENT_DB):
        return result
    reservations, payments = facts.reservations or {}, facts.payments or {}
    judged = in_flight = 0
    for order in (facts.orders or {}).values():
        if order.status not in TERMINAL:
            continue  # orders-terminal judges those
        if not facts.settled(order.updated_at):
            in_flight += 1
            continue
        judged += 1
        reservation = reservations.get(order.id)
        payment = payments.get(order.id)
        if order.status in CONFIRMED:
            _confirmed(result, order, reservation, payment)
        else:
            _cancelled(result, order, reservation, payment)
    for reservation in reservations.values():
        if (
            reservation.status in HOLDING
            and not facts.knows_order(reservation.order_id)
            and facts.in_scope(reservation.created_at)
            and facts.settled(reservation.created_at)
        ):
            result.add(
                reservation.order_id,
                "inventory holds stock for an order the order service does not know",
                "no reservation holding stock",
                f"reservation {reservation.status}",
            )
    for payment in payments.values():
        if (
            payment.status == "SUCCEEDED"
            and not facts.knows_order(payment.order_id)
            and facts.in_scope(payment.created_at)
            and facts.settled(payment.created_at)
        ):
            result.add(
                payment.order_id,
                "payment charged an order the order service does not know",
                NO_CHARGE,
                f"SUCCEEDED, {money(payment.amount, payment.currency)} charged",
            )
    result.summary = f"{judged} ended order(s) judged, {in_flight} with effects still on their way"
    result.facts = {"judged": judged, "in_flight": in_flight}
    return result


def _confirmed(
    result: CheckResult, order: Order, reservation: Reservation | None, payment: Payment | None
) -> None:
    total = money(order.total_amount, order.currency)
    if reservation is None or reservation.status != "COMMITTED":
        result.add(
            order.id,
            f"stock of a {order.status} order not committed",
            "reservation COMMITTED",
            f"reservation {reservation.status}" if reservation else "no reservation",
        )
    expected = f"one succeeded charge of {total}, nothing refunded"
    if payment is None:
        result.add(order.id, f"no payment for a {order.status} order", expected, "no payment row")
        return
    if payment.status != "SUCCEEDED" or payment.refunded_amount:
        refunded = payment.refunded_amount
        also = f", {money(refunded, payment.currency)} refunded" if refunded else ""
        result.add(
            order.id,
            f"payment of a {order.status} order not succeeded",
            expected,
            f"payment {payment.status}{also}",
        )
    elif (payment.amount, payment.currency) != (order.total_amount, order.currency):
        result.add(
            order.id,
            "charged amount differs from the order's total",
            f"{total} charged",
            f"{money(payment.amount, payment.currency)} charged",
        )


def _cancelled(
    result: CheckResult, order: Order, reservation: Reservation | None, payment: Payment | None
) -> None:
    reason = f"CANCELLED({order.cancel_reason})"
    if reservation is None:
        result.add(
            order.id, f"inventory never heard of a {reason} order", RELEASED, "no reservation"
        )
    elif reservation.status in HOLDING:
        result.add(
            order.id,
            f"stock still held by a {reason} order",
            RELEASED,
            f"reservation {reservation.status}",
        )
    if payment is None:
        result.add(order.id, f"payment never heard of a {reason} order", NO_CHARGE, "no payment")
        return
    charged = money(payment.amount, payment.currency)
    if payment.charging_intent is not None:
        result.add(
            order.id,
            f"a charge still in progress for a {reason} order",
            NO_CHARGE,
            f"charging with {payment.charging_intent}",
        )
    elif payment.status == "SUCCEEDED":
        result.add(
            order.id,
            f"{reason} order charged and not refunded",
            NO_CHARGE,
            f"SUCCEEDED, {charged} charged ({payment.provider_payment_id})",
        )
    elif payment.status == "REFUNDED" and payment.refunded_amount < (payment.amount or 0):
        result.add(
            order.id,
            f"{reason} order refunded only in part",
            f"{charged} refunded",
            f"{money(payment.refunded_amount, payment.currency)} refunded",
        )
    if not payment.cancelled:
        result.add(
            order.id,
            f"payment has not seen that the order is {reason}",
            "payment row cancelled",
            f"payment {payment.status}, not cancelled",
        )


def stock_conserved(facts: Facts) -> CheckResult:
    """Per product, available + reserved + sold is the stock received through admin adjustments,
    reserved units are those of held reservations and sold units those of committed ones."""
    result = CheckResult("stock-conserved", "stock conserved")
    if not facts.require(result, INVENTORY_DB) or facts.products is None:
        return result
    for product in facts.products:
        total = product.available + product.reserved + product.sold
        if total != product.received:
            result.add(
                product.id,
                f"stock of {product.name!r} not conserved",
                f"available + reserved + sold = {product.received} (received through "
                "admin adjustments)",
                f"{product.available} + {product.reserved} + {product.sold} = {total}",
            )
        if product.reserved != product.held:
            result.add(
                product.id,
                f"reserved units of {product.name!r} differ from its held reservations",
                f"reserved = {product.held} (lines of RESERVED reservations)",
                f"reserved = {product.reserved}",
            )
        if product.sold != product.committed:
            result.add(
                product.id,
                f"sold units of {product.name!r} differ from its committed reservations",
                f"sold = {product.committed} (lines of COMMITTED reservations)",
                f"sold = {product.sold}",
            )
    units = sum(product.received for product in facts.products)
    result.summary = f"{len(facts.products)} product(s), {units} unit(s) received"
    result.facts = {"products": len(facts.products), "units_received": units}
    return result
