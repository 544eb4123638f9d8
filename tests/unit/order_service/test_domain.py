"""The order's state machine (docs/saga.md's order table) and the pricing rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from order_service.domain import (
    OPEN_STATUSES,
    CancelReason,
    Emitted,
    MixedCurrenciesError,
    OrderCancelled,
    OrderConfirmed,
    OrderLine,
    OrderNotCancellableError,
    OrderState,
    OrderStatus,
    PaymentMismatchError,
    Product,
    QuantityLimitError,
    SagaEvent,
    StatusChangeNotAllowedError,
    UnknownProductsError,
    advance_fulfilment,
    apply_saga_event,
    cancel_by_customer,
    check_payment_result,
    merge_lines,
    price_lines,
    request_fingerprint,
)

PENDING = OrderState(OrderStatus.PENDING)
RESERVED = OrderState(OrderStatus.RESERVED)
CONFIRMED = OrderState(OrderStatus.CONFIRMED, charged=True)
PROCESSING = OrderState(OrderStatus.PROCESSING, charged=True)
COMPLETED = OrderState(OrderStatus.COMPLETED, charged=True)
TIMED_OUT = OrderState(OrderStatus.CANCELLED, CancelReason.TIMEOUT)
ON_HOLD = OrderState(OrderStatus.ON_HOLD)
AWAITING = OrderState(OrderStatus.AWAITING_PAYMENT_ACTION)


@pytest.mark.parametrize(
    ("state", "event", "expected", "emitted"),
    [
        (PENDING, SagaEvent.STOCK_RESERVED, RESERVED, ()),
        (
            PENDING,
            SagaEvent.STOCK_REJECTED,
            OrderState(OrderStatus.CANCELLED, CancelReason.OUT_OF_STOCK),
            (OrderCancelled(CancelReason.OUT_OF_STOCK, OrderStatus.PENDING, charged=False),),
        ),
        (
            RESERVED,
            SagaEvent.STOCK_REJECTED,
            OrderState(OrderStatus.CANCELLED, CancelReason.OUT_OF_STOCK),
            (OrderCancelled(CancelReason.OUT_OF_STOCK, OrderStatus.RESERVED, charged=False),),
        ),
        (PENDING, SagaEvent.PAYMENT_SUCCEEDED, CONFIRMED, (OrderConfirmed(),)),
        (RESERVED, SagaEvent.PAYMENT_SUCCEEDED, CONFIRMED, (OrderConfirmed(),)),
        (
            RESERVED,
            SagaEvent.PAYMENT_FAILED,
            OrderState(OrderStatus.CANCELLED, CancelReason.PAYMENT_FAILED),
            (OrderCancelled(CancelReason.PAYMENT_FAILED, OrderStatus.RESERVED, charged=False),),
        ),
        (
            PENDING,
            SagaEvent.DEADLINE_PASSED,
            TIMED_OUT,
            (OrderCancelled(CancelReason.TIMEOUT, OrderStatus.PENDING, charged=False),),
        ),
        # A payment that lands after the deadline is recorded; payment refunds it on its own.
        (
            TIMED_OUT,
            SagaEvent.PAYMENT_SUCCEEDED,
            OrderState(OrderStatus.CANCELLED, CancelReason.TIMEOUT, charged=True),
            (),
        ),
        # Late or duplicate events never move an order backwards.
        (RESERVED, SagaEvent.STOCK_RESERVED, RESERVED, ()),
        (PENDING, SagaEvent.HELD_FOR_REVIEW, ON_HOLD, ()),
        (RESERVED, SagaEvent.HELD_FOR_REVIEW, ON_HOLD, ()),
        (ON_HOLD, SagaEvent.HELD_FOR_REVIEW, ON_HOLD, ()),
        (ON_HOLD, SagaEvent.STOCK_RESERVED, ON_HOLD, ()),
        (ON_HOLD, SagaEvent.PAYMENT_SUCCEEDED, CONFIRMED, (OrderConfirmed(),)),
        (
            ON_HOLD,
            SagaEvent.PAYMENT_FAILED,
            OrderState(OrderStatus.CANCELLED, CancelReason.PAYMENT_FAILED),
            (OrderCancelled(CancelReason.PAYMENT_FAILED, OrderStatus.ON_HOLD, False),),
        ),
        (
            ON_HOLD,
            SagaEvent.DEADLINE_PASSED,
            TIMED_OUT,
            (OrderCancelled(CancelReason.TIMEOUT, OrderStatus.ON_HOLD, False),),
        ),
        (CONFIRMED, SagaEvent.HELD_FOR_REVIEW, CONFIRMED, ()),
        (TIMED_OUT, SagaEvent.HELD_FOR_REVIEW, TIMED_OUT, ()),
        # 3-D Secure: the order waits for its customer until the payment's outcome or its
        # deadline; a review opened once they authenticated holds it.
        (PENDING, SagaEvent.PAYMENT_ACTION_REQUIRED, AWAITING, ()),
        (RESERVED, SagaEvent.PAYMENT_ACTION_REQUIRED, AWAITING, ()),
        (AWAITING, SagaEvent.PAYMENT_ACTION_REQUIRED, AWAITING, ()),
        (AWAITING, SagaEvent.STOCK_RESERVED, AWAITING, ()),
        (AWAITING, SagaEvent.PAYMENT_SUCCEEDED, CONFIRMED, (OrderConfirmed(),)),
        (
            AWAITING,
            SagaEvent.PAYMENT_FAILED,
            OrderState(OrderStatus.CANCELLED, CancelReason.PAYMENT_FAILED),
            (
                OrderCancelled(
                    CancelReason.PAYMENT_FAILED, OrderStatus.AWAITING_PAYMENT_ACTION, False
                ),
            ),
        ),
        (
            AWAITING,
            SagaEvent.DEADLINE_PASSED,
            TIMED_OUT,
            (OrderCancelled(CancelReason.TIMEOUT, OrderStatus.AWAITING_PAYMENT_ACTION, False),),
        ),
        (AWAITING, SagaEvent.HELD_FOR_REVIEW, ON_HOLD, ()),
        (ON_HOLD, SagaEvent.PAYMENT_ACTION_REQUIRED, ON_HOLD, ()),
        (CONFIRMED, SagaEvent.PAYMENT_ACTION_REQUIRED, CONFIRMED, ()),
        (TIMED_OUT, SagaEvent.PAYMENT_ACTION_REQUIRED, TIMED_OUT, ()),
        (CONFIRMED, SagaEvent.STOCK_RESERVED, CONFIRMED, ()),
        (CONFIRMED, SagaEvent.STOCK_REJECTED, CONFIRMED, ()),
        (CONFIRMED, SagaEvent.PAYMENT_FAILED, CONFIRMED, ()),
        (CONFIRMED, SagaEvent.DEADLINE_PASSED, CONFIRMED, ()),
        (CONFIRMED, SagaEvent.PAYMENT_SUCCEEDED, CONFIRMED, ()),
        (PROCESSING, SagaEvent.PAYMENT_FAILED, PROCESSING, ()),
        (COMPLETED, SagaEvent.DEADLINE_PASSED, COMPLETED, ()),
        (TIMED_OUT, SagaEvent.STOCK_RESERVED, TIMED_OUT, ()),
        (TIMED_OUT, SagaEvent.PAYMENT_FAILED, TIMED_OUT, ()),
        (TIMED_OUT, SagaEvent.STOCK_REJECTED, TIMED_OUT, ()),
    ],
)
def test_saga_table(
    state: OrderState, event: SagaEvent, expected: OrderState, emitted: tuple[Emitted, ...]
) -> None:
    transition = apply_saga_event(state, event)
    assert transition.state == expected
    assert transition.emitted == emitted


@pytest.mark.parametrize("state", [PENDING, RESERVED, ON_HOLD, AWAITING, CONFIRMED])
def test_the_customer_cancels_until_fulfilment_starts(state: OrderState) -> None:
    transition = cancel_by_customer(state)
    assert transition.state.status is OrderStatus.CANCELLED
    assert transition.state.cancel_reason is CancelReason.CUSTOMER_REQUEST
    assert transition.emitted == (
        OrderCancelled(CancelReason.CUSTOMER_REQUEST, state.status, charged=state.charged),
    )


@pytest.mark.parametrize("state", [PROCESSING, COMPLETED, TIMED_OUT])
def test_the_customer_cannot_cancel_in_fulfilment_or_twice(state: OrderState) -> None:
    with pytest.raises(OrderNotCancellableError, match=str(state.status)):
        cancel_by_customer(state)


def test_fulfilment_goes_one_step_at_a_time() -> None:
    processing = advance_fulfilment(CONFIRMED, OrderStatus.PROCESSING)
    assert processing == PROCESSING
    assert advance_fulfilment(processing, OrderStatus.COMPLETED) == COMPLETED


@pytest.mark.parametrize(
    ("state", "target"),
    [
        (PENDING, OrderStatus.PROCESSING),
        (RESERVED, OrderStatus.PROCESSING),
        (CONFIRMED, OrderStatus.COMPLETED),
        (PROCESSING, OrderStatus.PROCESSING),
        (COMPLETED, OrderStatus.PROCESSING),
        (TIMED_OUT, OrderStatus.PROCESSING),
    ],
)
def test_fulfilment_refuses_other_moves(state: OrderState, target: OrderStatus) -> None:
    with pytest.raises(StatusChangeNotAllowedError):
        advance_fulfilment(state, target)


def _run(events: list[SagaEvent]) -> tuple[OrderState, list[Emitted]]:
    """Apply `events` to a new order, checking each step's invariants; the end state and output."""
    state, emitted = PENDING, []
    payment_seen = False
    for event in events:
        transition = apply_saga_event(state, event)
        payment_seen = payment_seen or event is SagaEvent.PAYMENT_SUCCEEDED
        if state.status is OrderStatus.CANCELLED:
            assert transition.state.status is OrderStatus.CANCELLED
            assert transition.state.cancel_reason is state.cancel_reason
        if transition.state.status is OrderStatus.CONFIRMED:
            assert state.status is OrderStatus.CONFIRMED or event is SagaEvent.PAYMENT_SUCCEEDED
        for output in transition.emitted:
            if isinstance(output, OrderCancelled):
                assert output.charged is payment_seen
        assert transition.state.charged is payment_seen
        state = transition.state
        emitted += transition.emitted
    return state, emitted


@given(st.lists(st.sampled_from(SagaEvent), max_size=30))
def test_any_order_and_duplication_of_saga_events_decides_once(events: list[SagaEvent]) -> None:
    state, emitted = _run(events)
    confirmations = [e for e in emitted if isinstance(e, OrderConfirmed)]
    cancellations = [e for e in emitted if isinstance(e, OrderCancelled)]
    if state.status is OrderStatus.CONFIRMED:
        assert (len(confirmations), len(cancellations)) == (1, 0)
    elif state.status is OrderStatus.CANCELLED:
        assert (len(confirmations), len(cancellations)) == (0, 1)
        assert cancellations[0].reason is state.cancel_reason
    else:
        assert emitted == []
        assert state.status in OPEN_STATUSES


@given(
    st.permutations([SagaEvent.STOCK_RESERVED, SagaEvent.PAYMENT_SUCCEEDED]).flatmap(
        lambda happy: st.lists(st.sampled_from(happy), max_size=6).map(lambda dups: happy + dups)
    )
)
def test_a_reserved_and_paid_order_is_confirmed_whatever_the_arrival_order(
    events: list[SagaEvent],
) -> None:
    state, emitted = _run(events)
    assert state == CONFIRMED
    assert emitted == [OrderConfirmed()]


@given(
    st.sampled_from([SagaEvent.PAYMENT_SUCCEEDED, SagaEvent.PAYMENT_FAILED]).flatmap(
        lambda verdict: st.permutations(
            [SagaEvent.STOCK_RESERVED, SagaEvent.HELD_FOR_REVIEW, verdict]
        ).flatmap(
            lambda order: st.lists(st.sampled_from(order), max_size=6).map(
                lambda dups: (verdict, order + dups)
            )
        )
    )
)
def test_a_review_decided_in_any_order_with_the_other_events_decides_the_order_once(
    verdict_and_events: tuple[SagaEvent, list[SagaEvent]],
) -> None:
    """An approved review (its capture: PaymentSucceeded) confirms the order, a rejected or
    expired one (PaymentFailed) cancels it, whatever came before or after, and duplicated."""
    verdict, events = verdict_and_events
    state, emitted = _run(events)
    if verdict is SagaEvent.PAYMENT_SUCCEEDED:
        assert (state, emitted) == (CONFIRMED, [OrderConfirmed()])
    else:
        assert state.status is OrderStatus.CANCELLED
        assert state.cancel_reason is CancelReason.PAYMENT_FAILED
        assert [type(e) for e in emitted] == [OrderCancelled]


@given(st.lists(st.sampled_from(SagaEvent), max_size=30), st.integers(min_value=0, max_value=30))
def test_a_customer_cancel_anywhere_still_decides_once_each_way(
    events: list[SagaEvent], cancel_at: int
) -> None:
    state, emitted = _run(events[:cancel_at])
    try:
        cancelled = cancel_by_customer(state)
    except OrderNotCancellableError:
        assert state.status is OrderStatus.CANCELLED
    else:
        state, emitted = cancelled.state, emitted + list(cancelled.emitted)
    for event in events[cancel_at:]:
        transition = apply_saga_event(state, event)
        assert transition.state.status is OrderStatus.CANCELLED
        state, emitted = transition.state, emitted + list(transition.emitted)
    assert sum(isinstance(e, OrderCancelled) for e in emitted) == 1
    assert sum(isinstance(e, OrderConfirmed) for e in emitted) <= 1


P1, P2, P3 = (f"00000000-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))


def test_lines_of_one_product_are_merged_in_first_seen_order() -> None:
    lines = [OrderLine(P2, 3), OrderLine(P1, 1), OrderLine(P2, 4)]
    assert merge_lines(lines) == (OrderLine(P2, 7), OrderLine(P1, 1))


def test_merged_lines_keep_the_quantity_limit() -> None:
    with pytest.raises(QuantityLimitError) as refused:
        merge_lines([OrderLine(P1, 60), OrderLine(P2, 100), OrderLine(P1, 41)])
    assert refused.value.product_ids == [P1]


CATALOG = {
    P1: Product(P1, "Mug", 1250, "USD"),
    P2: Product(P2, "Tea", 399, "USD"),
    P3: Product(P3, "Kettle", 4000, "EUR"),
}


def test_lines_are_priced_at_catalog_prices() -> None:
    priced = price_lines([OrderLine(P1, 2), OrderLine(P2, 3)], CATALOG)
    assert [(line.name, line.unit_price, line.line_total) for line in priced.lines] == [
        ("Mug", 1250, 2500),
        ("Tea", 399, 1197),
    ]
    assert (priced.total, priced.currency) == (3697, "USD")


def test_unknown_products_are_named() -> None:
    missing = "00000000-0000-4000-8000-000000000009"
    with pytest.raises(UnknownProductsError, match=missing) as refused:
        price_lines([OrderLine(P1, 1), OrderLine(missing, 1)], CATALOG)
    assert refused.value.product_ids == [missing]


def test_one_order_has_one_currency() -> None:
    with pytest.raises(MixedCurrenciesError) as refused:
        price_lines([OrderLine(P1, 1), OrderLine(P3, 1)], CATALOG)
    assert refused.value.currency_of == {P1: "USD", P3: "EUR"}


def test_the_fingerprint_tells_a_retry_from_another_request() -> None:
    request = [OrderLine(P1, 1), OrderLine(P2, 2)]
    fingerprint = request_fingerprint(request, None)
    assert request_fingerprint(list(reversed(request)), None) == fingerprint
    assert request_fingerprint([OrderLine(P1, 1), OrderLine(P2, 3)], None) != fingerprint
    assert request_fingerprint(request, "pm_1") != fingerprint


def test_a_payment_result_must_be_for_the_orders_total_in_its_currency() -> None:
    check_payment_result(4149, "USD", 4149, "USD")
    check_payment_result(4149, "USD", 4149, "usd")
    for amount, currency in ((4148, "USD"), (0, "USD"), (4149, "EUR"), (-4149, "USD")):
        with pytest.raises(PaymentMismatchError, match=f"{amount} {currency}"):
            check_payment_result(4149, "USD", amount, currency)
