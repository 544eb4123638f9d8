"""Inventory rules: stock counters, the all-or-none reservation check, the reservation states.

Pure Python (no database, broker or framework): handlers load the facts, ask these functions
what to do, and write what they decide. docs/saga.md's inventory table is `on_*` below.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from choreo.errors import ChoreoError

# Counters travel as Avro `int` (StockLevelChanged), so a product's total stock stays below this.
MAX_UNITS = 2**31 - 1


class InventoryError(ChoreoError):
    """Root of the inventory service's errors; none of them is worth retrying."""


class ProductNotFoundError(InventoryError):
    """No such product, or it was deleted."""


class InsufficientStockError(InventoryError):
    """The change would take a product's available stock below zero."""


class StockLimitError(InventoryError):
    """The change would take a product's total stock past what the counters can hold."""


class InvalidQuantityError(InventoryError):
    """A quantity below 1, or a stock adjustment of zero units."""


class InvalidOrderError(InventoryError):
    """An order without lines: there is nothing to reserve, now or ever."""


class StockInvariantError(InventoryError):
    """Stock counters disagree with a reservation: a bug or a hand-edited row, never retried."""


class ReservationStatus(StrEnum):
    RESERVED = "RESERVED"
    RELEASED = "RELEASED"
    COMMITTED = "COMMITTED"
    # The order was refused (out of stock, unknown product): nothing was held, nothing to undo.
    REJECTED = "REJECTED"
    # The order was cancelled before its OrderCreated arrived: a late OrderCreated reserves nothing.
    CANCELLED_BEFORE_RESERVATION = "CANCELLED_BEFORE_RESERVATION"
    # OrderCreated arrived past the order's deadline (see `too_late_to_reserve`): nothing held.
    EXPIRED_BEFORE_RESERVATION = "EXPIRED_BEFORE_RESERVATION"


class RejectionReason(StrEnum):
    OUT_OF_STOCK = "OUT_OF_STOCK"
    UNKNOWN_PRODUCT = "UNKNOWN_PRODUCT"


@dataclass(frozen=True, slots=True)
class StockLevel:
    """One product's counters; every method returns the new level and keeps the total."""

    available: int
    reserved: int = 0
    sold: int = 0

    @property
    def total(self) -> int:
        return self.available + self.reserved + self.sold

    def is_low(self, threshold: int) -> bool:
        return self.available <= threshold

    def reserve(self, quantity: int) -> StockLevel:
        _check_quantity(quantity)
        if quantity > self.available:
            raise InsufficientStockError(
                f"cannot reserve {quantity} unit(s): {self.available} available"
            )
        return replace(self, available=self.available - quantity, reserved=self.reserved + quantity)

    def release(self, quantity: int) -> StockLevel:
        """Reserved units go back to available stock."""
        _check_quantity(quantity)
        if quantity > self.reserved:
            raise StockInvariantError(
                f"cannot release {quantity} unit(s): {self.reserved} reserved"
            )
        return replace(self, available=self.available + quantity, reserved=self.reserved - quantity)

    def commit(self, quantity: int) -> StockLevel:
        """Reserved units are sold."""
        _check_quantity(quantity)
        if quantity > self.reserved:
            raise StockInvariantError(f"cannot commit {quantity} unit(s): {self.reserved} reserved")
        return replace(self, reserved=self.reserved - quantity, sold=self.sold + quantity)

    def return_sold(self, quantity: int) -> StockLevel:
        """Sold units of a cancelled order go back to available stock."""
        _check_quantity(quantity)
        if quantity > self.sold:
            raise StockInvariantError(f"cannot return {quantity} unit(s): {self.sold} sold")
        return replace(self, available=self.available + quantity, sold=self.sold - quantity)

    def adjust(self, delta: int) -> StockLevel:
        """An admin restock (delta > 0) or write-off (delta < 0): the one way the total changes."""
        if delta == 0:
            raise InvalidQuantityError("a stock adjustment needs a non-zero delta")
        if self.available + delta < 0:
            raise InsufficientStockError(
                f"cannot remove {-delta} unit(s): {self.available} available"
            )
        if self.total + delta > MAX_UNITS:
            raise StockLimitError(f"a product cannot hold more than {MAX_UNITS} units")
        return replace(self, available=self.available + delta)


def low_stock_alert(level: StockLevel, threshold: int, *, alerted: bool) -> bool:
    """Whether a change that leaves a product at `level` announces it low (LowStockDetected).

    One alert per crossing: the change that brings `available` to or below the threshold
    alerts, and no later one does while it stays there, whichever way it moves, so stock
    hovering at the threshold is one alert, not one per order. `alerted` is whether this stay
    was announced; after any change it is `level.is_low(threshold)`, so the product is re-armed
    only once `available` rises above the threshold again.
    """
    return level.is_low(threshold) and not alerted


def _check_quantity(quantity: int) -> None:
    if quantity < 1:
        raise InvalidQuantityError(f"a quantity must be at least 1, not {quantity}")


def order_lines(lines: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Quantity per product, duplicate lines summed, in product-id order (the locking order)."""
    totals: dict[str, int] = {}
    for product_id, quantity in lines:
        _check_quantity(quantity)
        totals[product_id] = totals.get(product_id, 0) + quantity
    if not totals:
        raise InvalidOrderError("an order needs at least one line")
    return dict(sorted(totals.items()))


def too_late_to_reserve(deadline: datetime, now: datetime) -> bool:
    """Whether an order's saga gave up before its stock could be reserved.

    At its deadline the order service cancels an order not yet CONFIRMED (TIMEOUT), so units
    reserved for it from then on would only wait for that cancellation to release them. The
    order is not rejected either: a StockRejected would cancel it as OUT_OF_STOCK, a reason
    that is not true.
    """
    return now >= deadline


def expiry_reason(deadline: datetime, now: datetime) -> str:
    """Why an order's reservation is EXPIRED_BEFORE_RESERVATION, in words for an operator."""
    return (
        f"nothing reserved: the order's deadline ({_instant(deadline)}) had passed "
        f"at {_instant(now)}"
    )


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an order could not be reserved, and which of its products were the problem."""

    reason: RejectionReason
    product_ids: tuple[str, ...]


def reserve_all(
    lines: Mapping[str, int], stock: Mapping[str, StockLevel]
) -> dict[str, StockLevel] | Rejection:
    """Reserve every line or none: the new level of each product, or why not.

    `stock` holds the products that exist and are not deleted; any other product of `lines`
    rejects the order as UNKNOWN_PRODUCT, before stock is even looked at.
    """
    unknown = tuple(product_id for product_id in lines if product_id not in stock)
    if unknown:
        return Rejection(RejectionReason.UNKNOWN_PRODUCT, unknown)
    short = tuple(
        product_id
        for product_id, quantity in lines.items()
        if quantity > stock[product_id].available
    )
    if short:
        return Rejection(RejectionReason.OUT_OF_STOCK, short)
    return {
        product_id: stock[product_id].reserve(quantity) for product_id, quantity in lines.items()
    }


class StockMove(StrEnum):
    """What a reservation's transition does to the stock of each of its lines."""

    RELEASE = "RELEASE"
    COMMIT = "COMMIT"
    RETURN = "RETURN"

    def apply(self, level: StockLevel, quantity: int) -> StockLevel:
        if self is StockMove.RELEASE:
            return level.release(quantity)
        if self is StockMove.COMMIT:
            return level.commit(quantity)
        return level.return_sold(quantity)


@dataclass(frozen=True, slots=True)
class Transition:
    """A reservation's next status and what happens to its lines' stock (None: nothing)."""

    status: ReservationStatus
    move: StockMove | None = None


def on_payment_failed(status: ReservationStatus | None) -> Transition | None:
    """PaymentFailed: release a held reservation; anything else stays as it is."""
    if status is ReservationStatus.RESERVED:
        return Transition(ReservationStatus.RELEASED, StockMove.RELEASE)
    return None


def on_order_cancelled(status: ReservationStatus | None) -> Transition | None:
    """OrderCancelled: release held units, return sold ones, or leave a tombstone."""
    if status is None:
        return Transition(ReservationStatus.CANCELLED_BEFORE_RESERVATION)
    if status is ReservationStatus.RESERVED:
        return Transition(ReservationStatus.RELEASED, StockMove.RELEASE)
    if status is ReservationStatus.COMMITTED:
        return Transition(ReservationStatus.RELEASED, StockMove.RETURN)
    return None


def on_order_confirmed(status: ReservationStatus | None) -> Transition | None:
    """OrderConfirmed: a held reservation is sold."""
    if status is ReservationStatus.RESERVED:
        return Transition(ReservationStatus.COMMITTED, StockMove.COMMIT)
    return None
