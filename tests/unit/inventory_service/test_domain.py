"""Inventory rules without I/O: stock counters, all-or-none reservation, the saga's state table."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory_service.domain import (
    MAX_UNITS,
    InsufficientStockError,
    InvalidOrderError,
    InvalidQuantityError,
    Rejection,
    RejectionReason,
    ReservationStatus,
    StockInvariantError,
    StockLevel,
    StockLimitError,
    StockMove,
    Transition,
    expiry_reason,
    low_stock_alert,
    on_order_cancelled,
    on_order_confirmed,
    on_payment_failed,
    order_lines,
    reserve_all,
    too_late_to_reserve,
)

RESERVED = ReservationStatus.RESERVED
RELEASED = ReservationStatus.RELEASED
COMMITTED = ReservationStatus.COMMITTED
REJECTED = ReservationStatus.REJECTED
TOMBSTONE = ReservationStatus.CANCELLED_BEFORE_RESERVATION
EXPIRED = ReservationStatus.EXPIRED_BEFORE_RESERVATION

Decide = Callable[[ReservationStatus | None], Transition | None]


def test_reserving_moves_units_from_available_to_reserved() -> None:
    assert StockLevel(10).reserve(4) == StockLevel(available=6, reserved=4, sold=0)


def test_reserving_every_available_unit_is_allowed_but_not_one_more() -> None:
    assert StockLevel(3).reserve(3).available == 0
    with pytest.raises(InsufficientStockError):
        StockLevel(3).reserve(4)


def test_commit_release_and_return_move_units_between_counters() -> None:
    held = StockLevel(10).reserve(4)
    assert held.commit(4) == StockLevel(available=6, reserved=0, sold=4)
    assert held.release(4) == StockLevel(available=10, reserved=0, sold=0)
    assert held.commit(4).return_sold(4) == StockLevel(available=10, reserved=0, sold=0)


def test_releasing_more_than_is_held_is_an_invariant_violation() -> None:
    with pytest.raises(StockInvariantError):
        StockLevel(10, reserved=1).release(2)
    with pytest.raises(StockInvariantError):
        StockLevel(10, reserved=1).commit(2)
    with pytest.raises(StockInvariantError):
        StockLevel(10, sold=1).return_sold(2)


def test_adjustments_change_available_and_never_take_it_below_zero() -> None:
    level = StockLevel(5, reserved=2, sold=1)
    assert level.adjust(10) == StockLevel(15, reserved=2, sold=1)
    assert level.adjust(-5) == StockLevel(0, reserved=2, sold=1)
    with pytest.raises(InsufficientStockError):
        level.adjust(-6)
    with pytest.raises(InvalidQuantityError):
        level.adjust(0)


def test_adjustments_keep_the_total_within_what_an_avro_int_holds() -> None:
    level = StockLevel(MAX_UNITS - 10, reserved=5, sold=5)
    with pytest.raises(StockLimitError):
        level.adjust(1)
    assert StockLevel(MAX_UNITS - 1).adjust(1).total == MAX_UNITS


def test_low_stock_is_at_or_below_the_threshold() -> None:
    assert StockLevel(5).is_low(5)
    assert StockLevel(0).is_low(0)
    assert not StockLevel(6).is_low(5)


def alerts_along(availables: list[int], threshold: int) -> list[int]:
    """The levels that alert, as the service walks a product through `availables`."""
    alerted, alerts = False, []
    for available in availables:
        level = StockLevel(available)
        if low_stock_alert(level, threshold, alerted=alerted):
            alerts.append(available)
        alerted = level.is_low(threshold)
    return alerts


def test_stock_hovering_at_its_threshold_alerts_once_per_crossing() -> None:
    # Falls to 3, hovers 2-3 (orders, releases, a write-off, a restock of one), rises to 6,
    # falls to 3 again: two crossings, two alerts.
    assert alerts_along([10, 3, 2, 1, 2, 3, 6, 3, 2], threshold=3) == [3, 3]
    # Rising to the threshold is not rising above it: still the same stay.
    assert alerts_along([5, 2, 3, 2, 4, 0], threshold=3) == [2, 0]


@given(st.lists(st.integers(0, 8), max_size=30), st.integers(0, 8))
def test_alerts_are_exactly_the_crossings_from_above_the_threshold(
    availables: list[int], threshold: int
) -> None:
    path = [threshold + 1, *availables]  # a product starts above its threshold, armed
    crossings = [b for a, b in pairwise(path) if a > threshold >= b]
    assert alerts_along(path, threshold) == crossings


def test_order_lines_sum_duplicate_products_in_product_id_order() -> None:
    lines = order_lines([("b", 2), ("a", 1), ("b", 3)])
    assert lines == {"a": 1, "b": 5}
    assert list(lines) == ["a", "b"]


@pytest.mark.parametrize("quantity", [0, -1])
def test_order_lines_refuse_a_quantity_below_one(quantity: int) -> None:
    with pytest.raises(InvalidQuantityError):
        order_lines([("a", 1), ("b", quantity)])


def test_an_order_without_lines_is_invalid() -> None:
    with pytest.raises(InvalidOrderError):
        order_lines([])


def test_reserve_all_reserves_every_line() -> None:
    stock = {"a": StockLevel(5), "b": StockLevel(2)}
    assert reserve_all({"a": 5, "b": 1}, stock) == {
        "a": StockLevel(0, reserved=5),
        "b": StockLevel(1, reserved=1),
    }


def test_one_short_line_rejects_the_whole_order_and_names_only_that_product() -> None:
    stock = {"a": StockLevel(5), "b": StockLevel(2), "c": StockLevel(1)}
    outcome = reserve_all({"a": 1, "b": 3, "c": 1}, stock)
    assert outcome == Rejection(RejectionReason.OUT_OF_STOCK, ("b",))


def test_an_unknown_product_rejects_the_order_before_stock_is_considered() -> None:
    outcome = reserve_all({"a": 99, "ghost": 1}, {"a": StockLevel(1)})
    assert outcome == Rejection(RejectionReason.UNKNOWN_PRODUCT, ("ghost",))


@pytest.mark.parametrize(
    ("decide", "status", "expected"),
    [
        (on_payment_failed, RESERVED, Transition(RELEASED, StockMove.RELEASE)),
        (on_payment_failed, None, None),
        (on_payment_failed, COMMITTED, None),
        (on_payment_failed, RELEASED, None),
        (on_payment_failed, TOMBSTONE, None),
        (on_order_cancelled, RESERVED, Transition(RELEASED, StockMove.RELEASE)),
        (on_order_cancelled, COMMITTED, Transition(RELEASED, StockMove.RETURN)),
        (on_order_cancelled, None, Transition(TOMBSTONE)),
        (on_order_cancelled, RELEASED, None),
        (on_order_cancelled, REJECTED, None),
        (on_order_cancelled, TOMBSTONE, None),
        (on_order_confirmed, RESERVED, Transition(COMMITTED, StockMove.COMMIT)),
        (on_order_confirmed, None, None),
        (on_order_confirmed, RELEASED, None),
        (on_order_confirmed, COMMITTED, None),
        (on_order_confirmed, REJECTED, None),
        # An order past its deadline when it arrived holds nothing: nothing to undo.
        (on_payment_failed, EXPIRED, None),
        (on_order_cancelled, EXPIRED, None),
        (on_order_confirmed, EXPIRED, None),
    ],
)
def test_the_saga_table(
    decide: Decide, status: ReservationStatus | None, expected: Transition | None
) -> None:
    assert decide(status) == expected


def test_nothing_is_reserved_from_the_deadline_on() -> None:
    deadline = datetime(2030, 6, 15, 12, 0, tzinfo=UTC)
    assert not too_late_to_reserve(deadline, deadline - timedelta(milliseconds=1))
    assert too_late_to_reserve(deadline, deadline)
    assert too_late_to_reserve(deadline, deadline + timedelta(hours=1))
    assert expiry_reason(deadline, deadline + timedelta(seconds=3)) == (
        "nothing reserved: the order's deadline (2030-06-15T12:00:00.000Z) had passed "
        "at 2030-06-15T12:00:03.000Z"
    )


# Property: whatever saga events arrive, in any order and any number of times, each product's
# available + reserved + sold stays what it was, and reserved and sold are exactly the units
# of the orders that hold them. The model applies the domain's decisions as the handlers do.


class Inventory:
    def __init__(self, stock: dict[str, StockLevel]) -> None:
        self.stock = stock
        self.status: dict[int, ReservationStatus] = {}
        self.lines: dict[int, dict[str, int]] = {}

    def order_created(self, order: int, lines: list[tuple[str, int]], *, late: bool) -> None:
        if order in self.status:
            return
        if late:
            self.status[order] = EXPIRED
            return
        wanted = order_lines(lines)
        outcome = reserve_all(wanted, self.stock)
        if isinstance(outcome, Rejection):
            self.status[order] = REJECTED
            return
        self.stock.update(outcome)
        self.lines[order] = wanted
        self.status[order] = RESERVED

    def settle(self, order: int, decide: Decide) -> None:
        transition = decide(self.status.get(order))
        if transition is None:
            return
        self.status[order] = transition.status
        if transition.move is not None:
            for product, quantity in self.lines[order].items():
                self.stock[product] = transition.move.apply(self.stock[product], quantity)

    def held(self, product: str, status: ReservationStatus) -> int:
        return sum(
            lines.get(product, 0)
            for order, lines in self.lines.items()
            if self.status[order] is status
        )


PRODUCTS = ("p1", "p2", "p3")
orders = st.integers(min_value=0, max_value=6)
line = st.tuples(st.sampled_from((*PRODUCTS, "unknown")), st.integers(min_value=1, max_value=6))
created = st.tuples(
    st.sampled_from(("created", "created_late")), orders, st.lists(line, min_size=1, max_size=4)
)
settled = st.tuples(
    st.sampled_from(("payment_failed", "cancelled", "confirmed")), orders, st.just([])
)
DECIDE: dict[str, Decide] = {
    "payment_failed": on_payment_failed,
    "cancelled": on_order_cancelled,
    "confirmed": on_order_confirmed,
}


@settings(max_examples=400)
@given(
    initial=st.lists(st.integers(min_value=0, max_value=15), min_size=3, max_size=3),
    events=st.lists(st.one_of(created, settled), max_size=40),
)
def test_stock_is_conserved_under_any_sequence_of_saga_events(
    initial: list[int], events: list[tuple[str, int, list[tuple[str, int]]]]
) -> None:
    inventory = Inventory({p: StockLevel(n) for p, n in zip(PRODUCTS, initial, strict=True)})
    for kind, order, lines in events:
        if kind.startswith("created"):
            inventory.order_created(order, lines, late=kind == "created_late")
        else:
            inventory.settle(order, DECIDE[kind])
        for product, start in zip(PRODUCTS, initial, strict=True):
            level = inventory.stock[product]
            assert level.total == start
            assert min(level.available, level.reserved, level.sold) >= 0
            assert level.reserved == inventory.held(product, RESERVED)
            assert level.sold == inventory.held(product, COMMITTED)
