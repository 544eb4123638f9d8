"""What the payment service knows about an order and what it must do next: pure rules, no I/O.

Events of one order arrive in any order and any number of times (docs/saga.md), so each
handler records the fact it learned and asks `settle()` what the facts call for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

from choreo.errors import ChoreoError, TransientError


class PaymentError(ChoreoError):
    """Root of the payment service's errors."""


class PaymentMethodNotFoundError(PaymentError):
    """No payment method of this user has that id."""


class CardRejectedError(PaymentError):
    """The card cannot be saved: invalid, expired, or declined by the provider."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class InvalidCardError(CardRejectedError):
    """The card details or token are not valid (a client error, not a decline)."""


class CardDeclinedError(CardRejectedError):
    """The provider refused the card when it was saved."""


class CardNumbersRefusedError(InvalidCardError):
    """Raw card details were sent where only a provider's PaymentMethod id is taken."""


class ProviderUnavailableError(PaymentError, TransientError):
    """The payment provider failed in a way that may pass (5xx, 429, timeout, no connection)."""


class ProviderError(PaymentError):
    """The payment provider refused a request it will always refuse (e.g. a bad API key)."""


class ChargeStatus(StrEnum):
    NONE = "NONE"
    CHARGING = "CHARGING"  # an intent exists and its outcome is not recorded yet
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REFUNDED = "REFUNDED"
    # Given up before any money moved: too late to charge (see `PaymentFacts.too_late`).
    EXPIRED = "EXPIRED"
    # The risk screening held the order for review: the card is authorised (the intent
    # `requires_capture`), no money moved yet. An admin's approval captures it (SUCCEEDED),
    # a rejection or the review's expiry cancels it (FAILED).
    HELD = "HELD"
    # The card asked for authentication (3-D Secure): the intent `requires_action` and waits
    # for the customer; its outcome arrives as a Stripe webhook (handlers/webhooks.py).
    AWAITING_ACTION = "AWAITING_ACTION"
    # Held or awaiting the customer, then the order was cancelled: the intent was cancelled,
    # no money moved.
    VOIDED = "VOIDED"


class Action(StrEnum):
    CHARGE = "CHARGE"  # create an intent, commit its id, confirm it
    RESUME_CHARGE = "RESUME_CHARGE"  # an intent was committed before: ask the provider
    REFUND = "REFUND"
    EXPIRE = "EXPIRE"  # record EXPIRED and why; nothing is published (see `settle`)
    # Cancel the intent of a held or awaiting charge: the order was cancelled meanwhile.
    VOID = "VOID"
    NOTHING = "NOTHING"


@dataclass(frozen=True, slots=True)
class PaymentFacts:
    """What the service has learned about one order, and where its charge stands."""

    order_known: bool = False
    stock_reserved: bool = False
    cancelled: bool = False
    status: ChargeStatus = ChargeStatus.NONE
    # From OrderCreated: the order service cancels the order (TIMEOUT) unless it is CONFIRMED
    # by then. None while OrderCreated has not arrived (and on rows older than the column).
    deadline: datetime | None = None

    def too_late(self, now: datetime, margin: timedelta) -> bool:
        """Whether a charge started `now` could land after the deadline: `margin` is how long
        a charge, and its PaymentSucceeded's way to the order service, may take."""
        return self.deadline is not None and now >= self.deadline - margin

    def gave_up(self, now: datetime, margin: timedelta) -> bool:
        """Whether the saga gave up on this order, or will have before a charge could land."""
        return self.cancelled or self.too_late(now, margin)


def settle(facts: PaymentFacts, now: datetime, margin: timedelta) -> Action:
    """The one thing to do now; run again after doing it, until NOTHING.

    An intent left CHARGING by a crash is always resolved first: it may already have moved
    money, so a new charge must never be started beside it, and a refund needs its outcome.
    Resolving it needs the order's terms and deadline, though: a CHARGING order not known is one
    whose OrderCreated was rolled back after phase one (a crash), and it waits for that event's
    redelivery, since confirming without the deadline could charge past it.

    A step never acts on a saga that already gave up: no charge is started once the order is
    cancelled or it is too late (its deadline less `margin`). Too late, the order is EXPIRED
    and nothing is published: the order service's deadline sweep cancels it (TIMEOUT), the
    customer's true reason, whereas a PaymentFailed would cancel it as PAYMENT_FAILED and
    tell of a card that was never tried.

    A HELD order waits for its review whatever its deadline (the order service moved it past
    the review's expiry), and an AWAITING_ACTION one for its customer (the order service moved
    it by the time allowed to authenticate): only the order's cancellation acts on either
    (VOID); the customer's authentication reaches the service as a webhook, not as a fact.
    """
    if facts.status is ChargeStatus.CHARGING:
        return Action.RESUME_CHARGE if facts.order_known else Action.NOTHING
    if facts.cancelled and facts.status is ChargeStatus.SUCCEEDED:
        return Action.REFUND
    if facts.cancelled and facts.status in (ChargeStatus.HELD, ChargeStatus.AWAITING_ACTION):
        return Action.VOID
    if facts.status is not ChargeStatus.NONE or not facts.order_known:
        return Action.NOTHING
    if facts.too_late(now, margin):
        return Action.EXPIRE
    if facts.stock_reserved and not facts.cancelled:
        return Action.CHARGE
    return Action.NOTHING


def expiry_reason(facts: PaymentFacts, now: datetime, margin: timedelta) -> str:
    """Why an order is EXPIRED, in words for an operator (`choreo saga`)."""
    deadline = "unknown" if facts.deadline is None else _instant(facts.deadline)
    return (
        f"no charge: the order's deadline ({deadline}) less the charge margin "
        f"({margin.total_seconds():g} s) had passed at {_instant(now)}"
    )


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class IntentState(StrEnum):
    """Where a provider's payment intent stands, in the service's own words."""

    UNCONFIRMED = "UNCONFIRMED"  # created, never confirmed: no money moved
    PROCESSING = "PROCESSING"  # confirmed, outcome not known yet
    # Confirmed with manual capture: the card is authorised, no money moved until captured
    # (Stripe's `requires_capture`). Only an intent held for review is made so.
    AUTHORISED = "AUTHORISED"
    # The card asked for authentication (Stripe's `requires_action`, 3-D Secure): no money
    # moved; the customer authenticates with the intent's client secret, or it is cancelled.
    REQUIRES_ACTION = "REQUIRES_ACTION"
    SUCCEEDED = "SUCCEEDED"
    DECLINED = "DECLINED"
    CANCELED = "CANCELED"  # abandoned before confirmation: no money moved


class Resume(StrEnum):
    """What to do with the intent of an order found CHARGING, once the provider said where it
    stands."""

    RECORD = "RECORD"  # succeeded, declined, or cancelled by someone else: record it as it is
    CONFIRM = "CONFIRM"  # never confirmed and the order still stands: confirm it now
    ABANDON = "ABANDON"  # no money moved and the saga gave up: cancel it, back to NONE
    WAIT = "WAIT"  # the provider has not decided yet: try again later


def resume(state: IntentState, *, gave_up: bool) -> Resume:
    """The step that brings an intent found CHARGING to a recorded outcome.

    `gave_up` is `PaymentFacts.gave_up`: an unconfirmed intent is then cancelled, never
    confirmed, since confirming it is starting the charge.
    """
    if state is IntentState.PROCESSING:
        return Resume.WAIT
    if state is IntentState.AUTHORISED:
        return Resume.RECORD  # HELD; a cancelled order's authorisation is then voided
    if state is IntentState.UNCONFIRMED:
        return Resume.ABANDON if gave_up else Resume.CONFIRM
    if state is IntentState.REQUIRES_ACTION and gave_up:
        return Resume.ABANDON  # never ask a customer to authenticate a charge given up
    if state is IntentState.CANCELED and gave_up:
        return Resume.ABANDON  # cancelled by an earlier ABANDON that did not commit
    return Resume.RECORD


class OpenIntentStep(StrEnum):
    """What the open-intent sweep does with an intent the provider holds open for an order."""

    SETTLE = "SETTLE"  # the order's charge, its outcome never recorded: settle the order
    CANCEL = "CANCEL"  # moved no money and the order will never use it: cancel it
    LEAVE = "LEAVE"  # the provider has not decided, or it is no longer open
    HELD = "HELD"  # the authorisation of an order under review: the review ends it
    # The charge of an order AWAITING_ACTION has an outcome (its webhook lost, say): record it.
    RESOLVE = "RESOLVE"


def open_intent_step(
    state: IntentState, *, is_attempt: bool, status: ChargeStatus
) -> OpenIntentStep:
    """The sweep's step for an open intent, from where it stands and the order's facts.

    `is_attempt`: it is the intent the order committed in phase one of its charge. Any other
    intent of the order is an orphan (created, then the process died or failed before phase one
    committed; the redelivered event charges with a new one), or the declined intent of a
    failure already recorded: neither moved money, and cancelling it means nothing ever can
    (a customer completing a 3-D Secure challenge, say). The order's own charge, still
    CHARGING, is resumed as a redelivered event would (`resume`): confirmed while the order
    stands, cancelled once the saga gave up.
    """
    if is_attempt and status is ChargeStatus.CHARGING:
        return OpenIntentStep.SETTLE
    if is_attempt and status is ChargeStatus.HELD and state is IntentState.AUTHORISED:
        return OpenIntentStep.HELD
    if is_attempt and status is ChargeStatus.AWAITING_ACTION:
        # Still waiting for the customer (the order's deadline ends it) or being processed;
        # anything else is an outcome its webhook should have brought.
        if state in (IntentState.REQUIRES_ACTION, IntentState.PROCESSING):
            return OpenIntentStep.LEAVE
        return OpenIntentStep.RESOLVE
    if state in (
        IntentState.UNCONFIRMED,
        IntentState.DECLINED,
        IntentState.AUTHORISED,
        IntentState.REQUIRES_ACTION,
    ):
        return OpenIntentStep.CANCEL
    return OpenIntentStep.LEAVE


# Codes and messages of failures the provider does not word itself; safe to show the customer.
ACCOUNT_DELETED = "account_deleted"
ACCOUNT_DELETED_MESSAGE = "The customer's account was deleted: nothing is charged."
NO_PAYMENT_METHOD = "no_payment_method"
NO_PAYMENT_METHOD_MESSAGE = "No saved payment method to charge: add a card and order again."
PAYMENT_CANCELED = "payment_intent_canceled"
PAYMENT_CANCELED_MESSAGE = "The payment was cancelled at the payment provider."
RISK_DECLINED = "risk_declined"
RISK_DECLINED_MESSAGE = "The payment was declined by the shop's fraud screening."
REVIEW_REJECTED = "review_rejected"
REVIEW_REJECTED_MESSAGE = "The payment was not accepted after a review: nothing was charged."
REVIEW_EXPIRED = "review_expired"
REVIEW_EXPIRED_MESSAGE = "The payment's review was not completed in time: nothing was charged."


# Where raw card numbers may reach the service: the demo and the tests add the provider's test
# cards. Anywhere else a client tokenizes the card with the provider (Stripe.js, a mobile SDK)
# and sends the PaymentMethod id, so no card number touches the server, which keeps it out of
# PCI DSS scope; Stripe itself refuses raw numbers on live keys.
CARD_NUMBER_ENVIRONMENTS = frozenset({"dev", "test"})
CARD_NUMBERS_REFUSED = "card_numbers_refused"
CARD_NUMBERS_REFUSED_MESSAGE = (
    "Card numbers are not accepted: tokenize the card with Stripe (Stripe.js or a mobile SDK) "
    'and send its PaymentMethod id instead, as {"token": "pm_..."}.'
)


@dataclass(frozen=True, slots=True)
class CardIntake:
    """How cards may be added: a provider's PaymentMethod id always, raw numbers or not."""

    card_numbers: bool

    @classmethod
    def of_environment(cls, env: str) -> CardIntake:
        return cls(card_numbers=env in CARD_NUMBER_ENVIRONMENTS)

    def check_card_numbers(self) -> None:
        """Refuse raw card details unless they are taken here."""
        if not self.card_numbers:
            raise CardNumbersRefusedError(CARD_NUMBERS_REFUSED, CARD_NUMBERS_REFUSED_MESSAGE)


def luhn_valid(number: str) -> bool:
    """Whether `number` (digits only) passes the Luhn checksum every card number carries."""
    if not number.isdigit():
        return False
    total = 0
    for position, digit in enumerate(int(d) for d in reversed(number)):
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def card_expired(exp_month: int, exp_year: int, today: date) -> bool:
    """A card is valid until the end of its expiry month."""
    return (exp_year, exp_month) < (today.year, today.month)


def check_card(number: str, exp_month: int, exp_year: int, today: date) -> None:
    """Refuse card details no provider would accept, before any is called.

    The errors never quote the details.
    """
    if not luhn_valid(number):
        raise InvalidCardError("incorrect_number", "The card number is not valid.")
    if card_expired(exp_month, exp_year, today):
        raise InvalidCardError("expired_card", "The card has expired.")
