"""Orders as pure rules: the saga's state machine (docs/saga.md), fulfilment, pricing of lines.

Nothing here does I/O. `apply_saga_event`, `cancel_by_customer` and `advance_fulfilment` take
the facts the service holds about one order and return the new facts plus the events to emit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from choreo.errors import ChoreoError, RejectedEventError

MAX_LINES = 50
MAX_QUANTITY = 100


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    RESERVED = "RESERVED"
    # The payment service's risk screening held the order for review: the card is authorised,
    # not charged, until an admin approves (CONFIRMED) or rejects it, or the review expires
    # (CANCELLED, PAYMENT_FAILED).
    ON_HOLD = "ON_HOLD"
    # The card asked for authentication (3-D Secure): the order waits for its customer to
    # authenticate (the order's view carries what their client needs) until the payment's
    # outcome arrives (CONFIRMED, or CANCELLED PAYMENT_FAILED) or the deadline passes (TIMEOUT).
    AWAITING_PAYMENT_ACTION = "AWAITING_PAYMENT_ACTION"
    CONFIRMED = "CONFIRMED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


class CancelReason(StrEnum):
    OUT_OF_STOCK = "OUT_OF_STOCK"
    PAYMENT_FAILED = "PAYMENT_FAILED"
    TIMEOUT = "TIMEOUT"
    CUSTOMER_REQUEST = "CUSTOMER_REQUEST"


class SagaEvent(StrEnum):
    """What can happen to an order while the saga decides it (the record names, and the sweep)."""

    STOCK_RESERVED = "StockReserved"
    STOCK_REJECTED = "StockRejected"
    PAYMENT_SUCCEEDED = "PaymentSucceeded"
    PAYMENT_FAILED = "PaymentFailed"
    HELD_FOR_REVIEW = "RiskAssessed"  # a RiskAssessed that opened a review
    PAYMENT_ACTION_REQUIRED = "PaymentActionRequired"
    DEADLINE_PASSED = "DeadlinePassed"


# The saga has not decided these orders yet: only they can be confirmed, or cancelled by it.
OPEN_STATUSES = frozenset(
    {
        OrderStatus.PENDING,
        OrderStatus.RESERVED,
        OrderStatus.ON_HOLD,
        OrderStatus.AWAITING_PAYMENT_ACTION,
    }
)
CUSTOMER_CANCELLABLE_STATUSES = OPEN_STATUSES | {OrderStatus.CONFIRMED}
_BEFORE_REVIEW = frozenset(
    {OrderStatus.PENDING, OrderStatus.RESERVED, OrderStatus.AWAITING_PAYMENT_ACTION}
)
_NEXT_FULFILMENT_STATUS = {
    OrderStatus.CONFIRMED: OrderStatus.PROCESSING,
    OrderStatus.PROCESSING: OrderStatus.COMPLETED,
}
_CANCEL_REASON_OF = {
    SagaEvent.STOCK_REJECTED: CancelReason.OUT_OF_STOCK,
    SagaEvent.PAYMENT_FAILED: CancelReason.PAYMENT_FAILED,
    SagaEvent.DEADLINE_PASSED: CancelReason.TIMEOUT,
}


class OrderError(ChoreoError):
    """Root of the order service's own errors (never worth retrying)."""


class OrderNotFoundError(OrderError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"no order {order_id}")
        self.order_id = order_id


class OrderNotCancellableError(OrderError):
    def __init__(self, status: OrderStatus) -> None:
        super().__init__(f"an order that is {status} cannot be cancelled")
        self.status = status


class StatusChangeNotAllowedError(OrderError):
    def __init__(self, status: OrderStatus, target: OrderStatus) -> None:
        super().__init__(
            f"an order that is {status} cannot become {target}: "
            "fulfilment goes CONFIRMED -> PROCESSING -> COMPLETED"
        )


class IdempotencyKeyReusedError(OrderError):
    def __init__(self) -> None:
        super().__init__(
            "this Idempotency-Key was already used for a different order request; "
            "use a new key for a new order"
        )


class QuantityLimitError(OrderError):
    def __init__(self, product_ids: Sequence[str]) -> None:
        super().__init__(
            f"at most {MAX_QUANTITY} units of one product per order; "
            f"too many of {', '.join(product_ids)}"
        )
        self.product_ids = list(product_ids)


class UnknownProductsError(OrderError):
    def __init__(self, product_ids: Sequence[str]) -> None:
        super().__init__(f"unknown or deleted product(s): {', '.join(product_ids)}")
        self.product_ids = list(product_ids)


class MixedCurrenciesError(OrderError):
    def __init__(self, currency_of: Mapping[str, str]) -> None:
        currencies = ", ".join(sorted(set(currency_of.values())))
        super().__init__(f"the products are priced in different currencies ({currencies})")
        self.currency_of = dict(currency_of)


class PaymentMismatchError(RejectedEventError):
    """A payment result for another amount or currency than the order's: not this order's."""


def check_payment_result(total: int, currency: str, amount: int, paid_currency: str) -> None:
    """A payment result (PaymentSucceeded, PaymentFailed) is about the order only if it is for
    the order's total, in minor units, in the order's currency (ISO 4217, any case).

    Raises `PaymentMismatchError` otherwise. The order's stage is no test: a payment result may
    arrive before the order has read its StockReserved (another topic), or after it was
    cancelled (a late charge, which the payment service refunds); see docs/saga.md.
    """
    if amount != total or paid_currency.upper() != currency.upper():
        raise PaymentMismatchError(
            f"a payment result of {amount} {paid_currency[:8]} for an order of {total} {currency}"
        )


@dataclass(frozen=True)
class OrderState:
    """The facts about one order that its saga steps read and change."""

    status: OrderStatus
    cancel_reason: CancelReason | None = None
    charged: bool = False


@dataclass(frozen=True)
class OrderConfirmed:
    """Emit OrderConfirmed."""


@dataclass(frozen=True)
class OrderCancelled:
    """Emit OrderCancelled."""

    reason: CancelReason
    previous_status: OrderStatus
    charged: bool


Emitted = OrderConfirmed | OrderCancelled


@dataclass(frozen=True)
class Transition:
    state: OrderState
    emitted: tuple[Emitted, ...] = ()


def apply_saga_event(state: OrderState, event: SagaEvent) -> Transition:
    """docs/saga.md's order table: any order and duplication of events converges.

    A late or duplicate event never moves an order backwards; a payment that succeeds after
    the order was cancelled is only recorded (`charged`), the payment service refunds it.
    """
    if event is SagaEvent.PAYMENT_SUCCEEDED:
        if state.status in OPEN_STATUSES:
            confirmed = OrderState(OrderStatus.CONFIRMED, cancel_reason=None, charged=True)
            return Transition(confirmed, (OrderConfirmed(),))
        return Transition(replace(state, charged=True))
    if event is SagaEvent.STOCK_RESERVED:
        if state.status is OrderStatus.PENDING:
            return Transition(replace(state, status=OrderStatus.RESERVED))
        return Transition(state)
    if event is SagaEvent.PAYMENT_ACTION_REQUIRED:
        # Stock reserved or not yet read: the payment service charges only orders whose stock
        # it saw reserved. A held or decided order stays so: the action came before.
        if state.status in (OrderStatus.PENDING, OrderStatus.RESERVED):
            return Transition(replace(state, status=OrderStatus.AWAITING_PAYMENT_ACTION))
        return Transition(state)
    if event is SagaEvent.HELD_FOR_REVIEW:
        # Stock reserved or not yet read: held either way (the payment service holds only
        # orders whose stock it saw reserved; a card that asked for authentication is held once
        # the customer authenticated); a decided order stays decided.
        if state.status in _BEFORE_REVIEW:
            return Transition(replace(state, status=OrderStatus.ON_HOLD))
        return Transition(state)
    if state.status in OPEN_STATUSES:
        return _cancel(state, _CANCEL_REASON_OF[event])
    return Transition(state)


def cancel_by_customer(state: OrderState) -> Transition:
    """The customer withdraws the order: allowed until fulfilment starts."""
    if state.status not in CUSTOMER_CANCELLABLE_STATUSES:
        raise OrderNotCancellableError(state.status)
    return _cancel(state, CancelReason.CUSTOMER_REQUEST)


def advance_fulfilment(state: OrderState, target: OrderStatus) -> OrderState:
    """An admin moves a confirmed order on: CONFIRMED -> PROCESSING -> COMPLETED, one step."""
    if _NEXT_FULFILMENT_STATUS.get(state.status) is not target:
        raise StatusChangeNotAllowedError(state.status, target)
    return replace(state, status=target)


def _cancel(state: OrderState, reason: CancelReason) -> Transition:
    cancelled = replace(state, status=OrderStatus.CANCELLED, cancel_reason=reason)
    return Transition(cancelled, (OrderCancelled(reason, state.status, state.charged),))


@dataclass(frozen=True)
class OrderLine:
    """A requested line: `quantity` units of one product (ids are lowercase UUID strings)."""

    product_id: str
    quantity: int


@dataclass(frozen=True)
class Product:
    """What the catalog says a product costs now."""

    id: str
    name: str
    price: int
    currency: str


@dataclass(frozen=True)
class PricedLine:
    product_id: str
    name: str
    quantity: int
    unit_price: int

    @property
    def line_total(self) -> int:
        return self.quantity * self.unit_price


@dataclass(frozen=True)
class PricedOrder:
    lines: tuple[PricedLine, ...]
    currency: str

    @property
    def total(self) -> int:
        return sum(line.line_total for line in self.lines)


def merge_lines(lines: Iterable[OrderLine]) -> tuple[OrderLine, ...]:
    """One line per product, quantities added, in the order products first appear."""
    quantities: dict[str, int] = {}
    for line in lines:
        quantities[line.product_id] = quantities.get(line.product_id, 0) + line.quantity
    too_many = [product_id for product_id, q in quantities.items() if q > MAX_QUANTITY]
    if too_many:
        raise QuantityLimitError(too_many)
    return tuple(OrderLine(product_id, q) for product_id, q in quantities.items())


def price_lines(lines: Sequence[OrderLine], products: Mapping[str, Product]) -> PricedOrder:
    """Price each line at the catalog's current price; all lines must share one currency."""
    unknown = [line.product_id for line in lines if line.product_id not in products]
    if unknown:
        raise UnknownProductsError(unknown)
    currency_of = {line.product_id: products[line.product_id].currency for line in lines}
    currencies = set(currency_of.values())
    if len(currencies) != 1:
        raise MixedCurrenciesError(currency_of)
    priced = tuple(
        PricedLine(
            line.product_id,
            products[line.product_id].name,
            line.quantity,
            products[line.product_id].price,
        )
        for line in lines
    )
    return PricedOrder(priced, currencies.pop())


def request_fingerprint(lines: Sequence[OrderLine], payment_method_id: str | None) -> str:
    """A digest of what an order request asks for, to tell a retry from a different request."""
    canonical = json.dumps(
        {
            "items": sorted([line.product_id, line.quantity] for line in lines),
            "payment_method_id": payment_method_id,
        },
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
