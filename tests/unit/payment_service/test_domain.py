"""The payment rules without I/O: settle(), resuming a charge, card checks, and a simulated
saga in which events arrive in any order, any number of times, the process crashes, and its
clock passes the order's deadline at any moment (a pause, a backlog)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payment_service.domain import (
    Action,
    ChargeStatus,
    IntentState,
    InvalidCardError,
    OpenIntentStep,
    PaymentFacts,
    Resume,
    card_expired,
    check_card,
    expiry_reason,
    luhn_valid,
    open_intent_step,
    resume,
    settle,
)

NOW = datetime(2030, 6, 15, 12, 0, tzinfo=UTC)
MARGIN = timedelta(seconds=10)
IN_TIME = NOW + timedelta(minutes=1)  # a deadline that leaves time to charge
KNOWN_AND_RESERVED = PaymentFacts(order_known=True, stock_reserved=True, deadline=IN_TIME)
TOO_LATE = replace(KNOWN_AND_RESERVED, deadline=NOW + timedelta(seconds=5))


@pytest.mark.parametrize(
    ("facts", "action"),
    [
        (PaymentFacts(), Action.NOTHING),
        (PaymentFacts(order_known=True), Action.NOTHING),
        (PaymentFacts(stock_reserved=True), Action.NOTHING),
        (KNOWN_AND_RESERVED, Action.CHARGE),
        (replace(KNOWN_AND_RESERVED, cancelled=True), Action.NOTHING),
        (replace(KNOWN_AND_RESERVED, status=ChargeStatus.SUCCEEDED), Action.NOTHING),
        (replace(KNOWN_AND_RESERVED, status=ChargeStatus.FAILED), Action.NOTHING),
        (replace(KNOWN_AND_RESERVED, status=ChargeStatus.CHARGING), Action.RESUME_CHARGE),
        (
            replace(KNOWN_AND_RESERVED, cancelled=True, status=ChargeStatus.CHARGING),
            Action.RESUME_CHARGE,
        ),
        (
            replace(KNOWN_AND_RESERVED, cancelled=True, status=ChargeStatus.SUCCEEDED),
            Action.REFUND,
        ),
        (PaymentFacts(cancelled=True, status=ChargeStatus.SUCCEEDED), Action.REFUND),
        # Held for review: it waits for the admin whatever the deadline; cancelled, voided.
        (replace(KNOWN_AND_RESERVED, status=ChargeStatus.HELD), Action.NOTHING),
        (replace(TOO_LATE, status=ChargeStatus.HELD), Action.NOTHING),
        (replace(KNOWN_AND_RESERVED, cancelled=True, status=ChargeStatus.HELD), Action.VOID),
        (replace(KNOWN_AND_RESERVED, cancelled=True, status=ChargeStatus.VOIDED), Action.NOTHING),
        # Awaiting the customer (3-D Secure): the webhook brings the outcome, not a fact;
        # only the order's cancellation acts on it, whatever the deadline.
        (replace(KNOWN_AND_RESERVED, status=ChargeStatus.AWAITING_ACTION), Action.NOTHING),
        (replace(TOO_LATE, status=ChargeStatus.AWAITING_ACTION), Action.NOTHING),
        (
            replace(KNOWN_AND_RESERVED, cancelled=True, status=ChargeStatus.AWAITING_ACTION),
            Action.VOID,
        ),
        # Its OrderCreated rolled back after phase one: resumed once it is redelivered.
        (PaymentFacts(stock_reserved=True, status=ChargeStatus.CHARGING), Action.NOTHING),
        (
            replace(KNOWN_AND_RESERVED, cancelled=True, status=ChargeStatus.FAILED),
            Action.NOTHING,
        ),
        (
            replace(KNOWN_AND_RESERVED, cancelled=True, status=ChargeStatus.REFUNDED),
            Action.NOTHING,
        ),
    ],
)
def test_settle(facts: PaymentFacts, action: Action) -> None:
    assert settle(facts, NOW, MARGIN) is action


@pytest.mark.parametrize(
    ("facts", "action"),
    [
        # No charge starts once the deadline less the margin has passed: the order expires,
        # whatever else is known, and stays so.
        (TOO_LATE, Action.EXPIRE),
        (replace(TOO_LATE, deadline=NOW - timedelta(hours=1)), Action.EXPIRE),
        (replace(TOO_LATE, deadline=NOW + MARGIN), Action.EXPIRE),
        (replace(TOO_LATE, stock_reserved=False), Action.EXPIRE),
        (replace(TOO_LATE, cancelled=True), Action.EXPIRE),
        (replace(TOO_LATE, status=ChargeStatus.EXPIRED), Action.NOTHING),
        (replace(TOO_LATE, status=ChargeStatus.EXPIRED, cancelled=True), Action.NOTHING),
        # A deadline is only known from OrderCreated; nothing is decided without it.
        (PaymentFacts(stock_reserved=True, cancelled=True), Action.NOTHING),
        # What is under way, or done, is finished: a crashed charge is resolved (resume()
        # decides how), a charge that landed is refunded when the order is cancelled.
        (replace(TOO_LATE, status=ChargeStatus.CHARGING), Action.RESUME_CHARGE),
        (replace(TOO_LATE, status=ChargeStatus.SUCCEEDED), Action.NOTHING),
        (replace(TOO_LATE, status=ChargeStatus.SUCCEEDED, cancelled=True), Action.REFUND),
        (replace(TOO_LATE, status=ChargeStatus.FAILED), Action.NOTHING),
        # One millisecond more than the margin is still in time.
        (replace(TOO_LATE, deadline=NOW + MARGIN + timedelta(milliseconds=1)), Action.CHARGE),
        # Without a deadline (a row older than the rule), the order is charged as before.
        (replace(TOO_LATE, deadline=None), Action.CHARGE),
    ],
)
def test_no_charge_starts_past_the_deadline_less_the_margin(
    facts: PaymentFacts, action: Action
) -> None:
    assert settle(facts, NOW, MARGIN) is action


def test_a_zero_margin_charges_until_the_deadline_itself() -> None:
    at_deadline = replace(KNOWN_AND_RESERVED, deadline=NOW)
    assert settle(at_deadline, NOW - timedelta(milliseconds=1), timedelta(0)) is Action.CHARGE
    assert settle(at_deadline, NOW, timedelta(0)) is Action.EXPIRE


def test_the_expiry_reason_names_the_deadline_the_margin_and_the_moment() -> None:
    reason = expiry_reason(TOO_LATE, NOW, MARGIN)
    assert reason == (
        "no charge: the order's deadline (2030-06-15T12:00:05.000Z) less the charge margin "
        "(10 s) had passed at 2030-06-15T12:00:00.000Z"
    )


@pytest.mark.parametrize(
    ("state", "gave_up", "step"),
    [
        (IntentState.UNCONFIRMED, False, Resume.CONFIRM),
        (IntentState.UNCONFIRMED, True, Resume.ABANDON),
        (IntentState.SUCCEEDED, False, Resume.RECORD),
        (IntentState.SUCCEEDED, True, Resume.RECORD),
        (IntentState.DECLINED, False, Resume.RECORD),
        (IntentState.DECLINED, True, Resume.RECORD),
        (IntentState.CANCELED, True, Resume.ABANDON),
        (IntentState.CANCELED, False, Resume.RECORD),
        (IntentState.PROCESSING, False, Resume.WAIT),
        (IntentState.PROCESSING, True, Resume.WAIT),
        # Authorised for a review: recorded HELD (a cancelled order's hold is voided next).
        (IntentState.AUTHORISED, False, Resume.RECORD),
        (IntentState.AUTHORISED, True, Resume.RECORD),
        # Asks for the customer: recorded AWAITING_ACTION, unless the saga gave up.
        (IntentState.REQUIRES_ACTION, False, Resume.RECORD),
        (IntentState.REQUIRES_ACTION, True, Resume.ABANDON),
    ],
)
def test_resume(state: IntentState, gave_up: bool, step: Resume) -> None:
    assert resume(state, gave_up=gave_up) is step


@pytest.mark.parametrize(
    ("state", "is_attempt", "status", "step"),
    [
        # The order's own charge, never recorded: settled as a redelivered event would.
        (IntentState.UNCONFIRMED, True, ChargeStatus.CHARGING, OpenIntentStep.SETTLE),
        (IntentState.PROCESSING, True, ChargeStatus.CHARGING, OpenIntentStep.SETTLE),
        (IntentState.DECLINED, True, ChargeStatus.CHARGING, OpenIntentStep.SETTLE),
        # An orphan (created, its id never committed), whatever the order's status.
        (IntentState.UNCONFIRMED, False, ChargeStatus.NONE, OpenIntentStep.CANCEL),
        (IntentState.UNCONFIRMED, False, ChargeStatus.CHARGING, OpenIntentStep.CANCEL),
        (IntentState.UNCONFIRMED, False, ChargeStatus.SUCCEEDED, OpenIntentStep.CANCEL),
        (IntentState.UNCONFIRMED, False, ChargeStatus.EXPIRED, OpenIntentStep.CANCEL),
        # The declined intent of a recorded failure.
        (IntentState.DECLINED, True, ChargeStatus.FAILED, OpenIntentStep.CANCEL),
        # An authorisation: the hold of a review (the review ends it), its charge never
        # recorded (settled), or an orphan (cancelled).
        (IntentState.AUTHORISED, True, ChargeStatus.HELD, OpenIntentStep.HELD),
        (IntentState.AUTHORISED, True, ChargeStatus.CHARGING, OpenIntentStep.SETTLE),
        (IntentState.AUTHORISED, False, ChargeStatus.NONE, OpenIntentStep.CANCEL),
        (IntentState.AUTHORISED, False, ChargeStatus.FAILED, OpenIntentStep.CANCEL),
        # The order's charge awaits the customer: left while it waits or is processed, its
        # outcome recorded once it has one (its webhook lost); an orphan's challenge cancelled.
        (IntentState.REQUIRES_ACTION, True, ChargeStatus.AWAITING_ACTION, OpenIntentStep.LEAVE),
        (IntentState.PROCESSING, True, ChargeStatus.AWAITING_ACTION, OpenIntentStep.LEAVE),
        (IntentState.DECLINED, True, ChargeStatus.AWAITING_ACTION, OpenIntentStep.RESOLVE),
        (IntentState.AUTHORISED, True, ChargeStatus.AWAITING_ACTION, OpenIntentStep.RESOLVE),
        (IntentState.REQUIRES_ACTION, False, ChargeStatus.NONE, OpenIntentStep.CANCEL),
        (IntentState.REQUIRES_ACTION, True, ChargeStatus.VOIDED, OpenIntentStep.CANCEL),
        # Nothing to cancel: the provider is deciding, or it is no longer open.
        (IntentState.PROCESSING, False, ChargeStatus.NONE, OpenIntentStep.LEAVE),
        (IntentState.SUCCEEDED, True, ChargeStatus.SUCCEEDED, OpenIntentStep.LEAVE),
        (IntentState.CANCELED, False, ChargeStatus.NONE, OpenIntentStep.LEAVE),
    ],
)
def test_open_intent_step(
    state: IntentState, is_attempt: bool, status: ChargeStatus, step: OpenIntentStep
) -> None:
    assert open_intent_step(state, is_attempt=is_attempt, status=status) is step


def test_gave_up_is_cancelled_or_too_late() -> None:
    assert not KNOWN_AND_RESERVED.gave_up(NOW, MARGIN)
    assert replace(KNOWN_AND_RESERVED, cancelled=True).gave_up(NOW, MARGIN)
    assert TOO_LATE.gave_up(NOW, MARGIN)
    assert not TOO_LATE.gave_up(NOW - timedelta(seconds=1), timedelta(0))


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("4242424242424242", True),
        ("4000000000000341", True),
        ("5555555555554444", True),
        ("378282246310005", True),
        ("4242424242424241", False),
        ("1234567812345678", False),
        ("42424242a4242424", False),
        ("", False),
    ],
)
def test_luhn(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid


def test_a_card_is_valid_until_the_end_of_its_expiry_month() -> None:
    today = date(2030, 6, 15)
    assert not card_expired(6, 2030, today)
    assert not card_expired(1, 2031, today)
    assert card_expired(5, 2030, today)
    assert card_expired(12, 2029, today)


@pytest.mark.parametrize(
    ("number", "month", "year", "code"),
    [
        ("4242424242424241", 12, 2040, "incorrect_number"),
        ("4242424242424242", 1, 2020, "expired_card"),
    ],
)
def test_check_card_refuses_without_quoting_the_card(
    number: str, month: int, year: int, code: str
) -> None:
    with pytest.raises(InvalidCardError) as refused:
        check_card(number, month, year, date(2030, 6, 15))
    assert refused.value.code == code
    assert number not in str(refused.value)


# --- a simulated saga ------------------------------------------------------------------------
#
# A model of the service and of Stripe: the order's committed row, the phase-one attempt (its
# own commit), the provider's intents and refunds. Each delivery of an event runs the handler
# loop; a crash rolls back what the delivery did to the row, but neither what it did at the
# provider nor a committed phase one, and the event is delivered again after the others.
# The service's clock reads NOW until it passes the order's deadline less the margin: between
# two deliveries ("Late", as after a pause or a backlog), or while a charge is under way,
# between its phase one and its confirm (the process paused there). The open-intent sweep
# runs between deliveries (it skips a row a handler holds) and may crash like a handler.

EVENTS = ("OrderCreated", "StockReserved", "OrderCancelled")
LATE = "Late"
SWEEP = "Sweep"
OPEN = (IntentState.UNCONFIRMED, IntentState.PROCESSING, IntentState.DECLINED)
CRASH_POINTS = ("after_create", "after_phase_one", "after_confirm", "after_refund")


class CrashError(Exception):
    pass


@dataclass
class Provider:
    card_succeeds: bool
    intents: dict[str, IntentState] = field(default_factory=dict)
    confirmed: list[str] = field(default_factory=list)
    refunded: set[str] = field(default_factory=set)
    refunds_made: int = 0

    @property
    def money_moved(self) -> int:
        return sum(state is IntentState.SUCCEEDED for state in self.intents.values())

    def create(self) -> str:
        intent_id = f"pi_{len(self.intents)}"
        self.intents[intent_id] = IntentState.UNCONFIRMED
        return intent_id

    def confirm(self, intent_id: str) -> IntentState:
        assert self.intents[intent_id] is IntentState.UNCONFIRMED, "confirmed twice"
        self.confirmed.append(intent_id)
        outcome = IntentState.SUCCEEDED if self.card_succeeds else IntentState.DECLINED
        self.intents[intent_id] = outcome
        return outcome

    def cancel(self, intent_id: str) -> None:
        assert self.intents[intent_id] in OPEN, "cancelled an intent that is not open"
        self.intents[intent_id] = IntentState.CANCELED

    @property
    def open_intents(self) -> list[str]:
        return [i for i, state in self.intents.items() if state in OPEN]

    def refund(self, intent_id: str) -> None:
        # As the gateway does: look for the intent's refund before making one.
        if intent_id not in self.refunded:
            self.refunded.add(intent_id)
            self.refunds_made += 1


@dataclass
class Row:
    order_known: bool = False
    stock_reserved: bool = False
    cancelled: bool = False
    status: ChargeStatus = ChargeStatus.NONE
    charge: str | None = None
    attempt: str | None = None


@dataclass
class Service:
    provider: Provider
    crashes: list[str]  # crash points, in the order they are to happen
    two_phase: bool = True  # False: the intent's id commits with the outcome (unsafe)
    pause_before_confirm: bool = False  # the clock passes charge-by during the first charge
    row: Row = field(default_factory=Row)
    now: datetime = NOW

    @property
    def late(self) -> bool:
        return self.now >= IN_TIME - MARGIN

    def pass_the_deadline(self) -> None:
        self.now = IN_TIME

    def facts(self, row: Row) -> PaymentFacts:
        status = row.status
        if status is ChargeStatus.NONE and row.attempt is not None:
            status = ChargeStatus.CHARGING
        deadline = IN_TIME if row.order_known else None
        return PaymentFacts(row.order_known, row.stock_reserved, row.cancelled, status, deadline)

    def crash_at(self, point: str) -> None:
        if self.crashes and self.crashes[0] == point:
            self.crashes.pop(0)
            raise CrashError(point)

    def deliver_all(self, events: list[str]) -> None:
        queue = list(events)
        while queue:
            event = queue.pop(0)
            if event == LATE:
                self.pass_the_deadline()
                continue
            try:
                if event == SWEEP:
                    self.sweep()
                else:
                    self.handle(event)
            except CrashError:
                queue.append(event)  # redelivered after a restart, behind the others

    def handle(self, event: str) -> None:
        row = replace(self.row)  # the handler's transaction
        if event == "OrderCreated":
            row.order_known = True
        elif event == "StockReserved":
            row.stock_reserved = True
        else:
            row.cancelled = True
        self.settle(row)

    def sweep(self) -> None:
        """One pass of the open-intent sweep (handlers/intents.py)."""
        for intent_id in self.provider.open_intents:
            row = replace(self.row)  # a transaction per intent
            state = self.provider.intents[intent_id]
            step = open_intent_step(
                state, is_attempt=intent_id == row.attempt, status=self.facts(row).status
            )
            if step is OpenIntentStep.SETTLE:
                self.settle(row)
            elif step is OpenIntentStep.CANCEL:
                self.provider.cancel(intent_id)
                self.row = row

    def settle(self, row: Row) -> None:
        """The handlers' loop: do what settle() says until NOTHING, then commit `row`."""
        for _ in range(10):
            action = settle(self.facts(row), self.now, MARGIN)
            if action is Action.NOTHING:
                self.row = row  # commit
                return
            if action is Action.CHARGE:
                assert self.provider.money_moved == 0, "asked to charge after a charge"
                intent_id = self.provider.create()
                self.crash_at("after_create")
                row.attempt = intent_id
                if self.two_phase:
                    self.row = replace(self.row, attempt=intent_id)
                self.crash_at("after_phase_one")
                if self.pause_before_confirm:
                    self.pause_before_confirm = False
                    self.pass_the_deadline()
                if self.facts(row).too_late(self.now, MARGIN):
                    continue  # as the handler does: resuming the intent cancels it
                self.confirm(row, intent_id)
            elif action is Action.RESUME_CHARGE:
                assert row.attempt is not None
                state = self.provider.intents[row.attempt]
                step = resume(state, gave_up=self.facts(row).gave_up(self.now, MARGIN))
                if step is Resume.RECORD:
                    self.record(row, row.attempt, state)
                elif step is Resume.CONFIRM:
                    self.confirm(row, row.attempt)
                elif step is Resume.ABANDON:
                    if state is IntentState.UNCONFIRMED:
                        self.provider.intents[row.attempt] = IntentState.CANCELED
                    row.attempt = None
                else:
                    pytest.fail(f"unexpected step {step}")
            elif action is Action.EXPIRE:
                assert self.late
                row.status = ChargeStatus.EXPIRED
            else:
                assert row.charge is not None
                self.provider.refund(row.charge)
                self.crash_at("after_refund")
                row.status = ChargeStatus.REFUNDED
        pytest.fail("settle() never came to NOTHING")

    def confirm(self, row: Row, intent_id: str) -> None:
        assert not row.cancelled, "charged a cancelled order"
        assert not self.late, "charged past the deadline less the margin"
        state = self.provider.confirm(intent_id)
        self.crash_at("after_confirm")
        self.record(row, intent_id, state)

    def record(self, row: Row, intent_id: str, state: IntentState) -> None:
        row.charge = intent_id
        succeeded = state is IntentState.SUCCEEDED
        row.status = ChargeStatus.SUCCEEDED if succeeded else ChargeStatus.FAILED


deliveries = st.lists(st.sampled_from([*EVENTS, SWEEP]), max_size=8).flatmap(
    lambda extra: st.permutations([*EVENTS, *extra, LATE])
)
crash_plans = st.lists(st.sampled_from(CRASH_POINTS), max_size=4)


@settings(max_examples=500)
@given(
    events=deliveries,
    left_out=st.sets(st.sampled_from([*EVENTS, LATE])),
    card_succeeds=st.booleans(),
    crashes=crash_plans,
    pause_before_confirm=st.booleans(),
)
def test_any_order_duplicates_crashes_and_pauses_charge_at_most_once_in_time(
    events: list[str],
    left_out: set[str],
    card_succeeds: bool,
    crashes: list[str],
    pause_before_confirm: bool,
) -> None:
    """Charged at most once, never past the deadline less the margin (`confirm` asserts it),
    refunded exactly when due, an order not charged in time ends EXPIRED, and once the
    open-intent sweep has run after the last event, no intent is left open, whenever it ran
    before."""
    provider = Provider(card_succeeds)
    service = Service(provider, list(crashes), pause_before_confirm=pause_before_confirm)
    delivered = [e for e in events if e not in left_out]
    service.deliver_all(delivered)
    service.deliver_all([SWEEP])

    facts = service.facts(service.row)
    cancelled = "OrderCancelled" in delivered
    card_tried = bool(provider.confirmed)
    assert provider.open_intents == []
    assert provider.money_moved <= 1
    assert facts.status is not ChargeStatus.CHARGING
    assert provider.refunds_made == (1 if cancelled and provider.money_moved else 0)
    if facts.status is ChargeStatus.EXPIRED:
        assert service.late
        assert not card_tried
    if cancelled:
        if provider.money_moved:
            assert facts.status is ChargeStatus.REFUNDED
        else:
            assert facts.status in (ChargeStatus.NONE, ChargeStatus.FAILED, ChargeStatus.EXPIRED)
    elif {"OrderCreated", "StockReserved"} <= set(delivered):
        if card_tried:
            assert provider.money_moved == (1 if card_succeeds else 0)
            assert facts.status is (
                ChargeStatus.SUCCEEDED if card_succeeds else ChargeStatus.FAILED
            )
        else:  # only the deadline stops a charge the order is ready for
            assert service.late
            assert facts.status is ChargeStatus.EXPIRED
    else:
        assert provider.money_moved == 0
        assert facts.status in (ChargeStatus.NONE, ChargeStatus.EXPIRED)


def test_the_model_catches_a_charge_that_is_not_two_phase() -> None:
    """Without phase one's own commit, a crash after the confirm leads to a second charge."""
    safe = Service(Provider(card_succeeds=True), ["after_confirm"])
    safe.deliver_all(["OrderCreated", "StockReserved"])
    assert safe.provider.money_moved == 1
    assert safe.row.status is ChargeStatus.SUCCEEDED

    unsafe = Service(Provider(card_succeeds=True), ["after_confirm"], two_phase=False)
    with pytest.raises(AssertionError, match="asked to charge after a charge"):
        unsafe.deliver_all(["OrderCreated", "StockReserved"])


def test_every_order_of_the_three_events_converges() -> None:
    for order in itertools.permutations(EVENTS):
        provider = Provider(card_succeeds=True)
        service = Service(provider, [])
        service.deliver_all(list(order))
        charged_before_cancel = order.index("OrderCancelled") == 2
        assert provider.money_moved == (1 if charged_before_cancel else 0)
        assert provider.refunds_made == (1 if charged_before_cancel else 0)
        assert service.row.status is (
            ChargeStatus.REFUNDED if charged_before_cancel else ChargeStatus.NONE
        )


def test_a_cancel_that_finds_an_unconfirmed_intent_abandons_it() -> None:
    """A crash between phase one and the confirm, then the cancellation: no money moves."""
    provider = Provider(card_succeeds=True)
    service = Service(provider, ["after_phase_one"])
    service.deliver_all(["OrderCreated", "StockReserved", "OrderCancelled"])
    assert provider.intents == {"pi_0": IntentState.CANCELED}
    assert service.row.status is ChargeStatus.NONE
    assert service.row.attempt is None


def test_a_service_paused_past_the_deadline_never_charges() -> None:
    """The events wait out the deadline (a paused process), then arrive in any order: no
    intent is even created, no refund is needed, and the order ends EXPIRED."""
    for order in itertools.permutations(EVENTS):
        provider = Provider(card_succeeds=True)
        service = Service(provider, [])
        service.deliver_all([LATE, *order])
        assert provider.intents == {}
        assert provider.refunds_made == 0
        assert service.row.status is ChargeStatus.EXPIRED


def test_a_charge_whose_order_is_not_known_waits_for_it() -> None:
    """OrderCreated's transaction dies after phase one; past the deadline, a second
    StockReserved (or the sweep) finds the intent CHARGING, with no deadline to check it by,
    and does not confirm it; the redelivered OrderCreated cancels it."""
    for late_step in (["StockReserved"], [SWEEP]):
        provider = Provider(card_succeeds=True)
        service = Service(provider, ["after_phase_one"])
        service.deliver_all(["StockReserved", "OrderCreated", LATE, *late_step])
        assert provider.intents == {"pi_0": IntentState.CANCELED}
        assert provider.money_moved == 0
        assert service.row.status is ChargeStatus.EXPIRED


def test_an_orphan_intent_is_cancelled_and_the_order_charged_once() -> None:
    """The process dies between creating the intent and committing its id: the sweep cancels
    the orphan, the redelivered event charges with a new intent."""
    provider = Provider(card_succeeds=True)
    service = Service(provider, ["after_create"])
    service.deliver_all(["OrderCreated", "StockReserved", SWEEP])
    assert provider.intents == {"pi_0": IntentState.CANCELED, "pi_1": IntentState.SUCCEEDED}
    assert service.row.status is ChargeStatus.SUCCEEDED


def test_the_declined_intent_of_a_failed_charge_is_cancelled() -> None:
    provider = Provider(card_succeeds=False)
    service = Service(provider, [])
    service.deliver_all(["OrderCreated", "StockReserved", SWEEP])
    assert provider.intents == {"pi_0": IntentState.CANCELED}
    assert service.row.status is ChargeStatus.FAILED


def test_a_pause_between_phase_one_and_the_confirm_cancels_the_intent() -> None:
    provider = Provider(card_succeeds=True)
    service = Service(provider, [], pause_before_confirm=True)
    service.deliver_all(["OrderCreated", "StockReserved"])
    assert provider.intents == {"pi_0": IntentState.CANCELED}
    assert service.row.status is ChargeStatus.EXPIRED
    assert service.row.attempt is None


def test_an_intent_found_charging_past_the_deadline_is_cancelled_never_confirmed() -> None:
    """A crash after phase one, the process back only after the deadline less the margin."""
    provider = Provider(card_succeeds=True)
    service = Service(provider, ["after_phase_one"])
    service.deliver_all(["OrderCreated", "StockReserved", LATE])
    assert provider.intents == {"pi_0": IntentState.CANCELED}
    assert provider.money_moved == 0
    assert service.row.status is ChargeStatus.EXPIRED
