"""Risk screening of a charge before it is made: lists, rules and a score, and the explanation
of every decision. Pure rules, no I/O: the handlers read the counters and the lists in the
payment database and keep them in the transaction of the decision.

Precedence, first match wins (the order Stripe Radar applies its rules in): the allow-list,
the block-list, the rules that decline, the rules that hold for review, then the score against
its thresholds. Every rule that matched is named in the explanation with its points and the
counters it read, whichever decided.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from payment_service.domain import PaymentError


class RiskDecision(StrEnum):
    APPROVE = "APPROVE"
    REVIEW = "REVIEW"  # the card is authorised, not captured, until an admin decides
    DECLINE = "DECLINE"


class ListKind(StrEnum):
    """What a list entry matches: the card (Stripe's `card.fingerprint`, the same for every
    PaymentMethod of one card number), the customer's e-mail, the client's IP address, the
    customer (user id)."""

    CARD_FINGERPRINT = "card_fingerprint"
    EMAIL = "email"
    IP = "ip"
    CUSTOMER = "customer"


class ListAction(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"


class RiskPolicyError(PaymentError):
    """A risk policy that cannot be applied (a review threshold above the decline one, say)."""


class InvalidListEntryError(PaymentError):
    """A list entry whose value is not one of its kind (an IP address that is none, ...)."""


class ListEntryExistsError(PaymentError):
    """The value is on a list already (on this one or the other: one at a time)."""


class ListEntryNotFoundError(PaymentError):
    """No list entry has that id."""


@dataclass(frozen=True)
class ListEntry:
    """One value on the allow- or block-list, kept in the form `normalized` gives it."""

    kind: ListKind
    value: str
    action: ListAction

    @classmethod
    def of(cls, kind: ListKind, value: str, action: ListAction) -> ListEntry:
        """Raises InvalidListEntryError for a value that cannot be one of `kind`."""
        return cls(kind, normalized(kind, value), action)


def normalized(kind: ListKind, value: str) -> str:
    """The form values of `kind` are compared in: e-mail case-folded (RFC 5321 §2.4 lets the
    local part be case-sensitive; no provider Choreo meets treats it so), an IP address in its
    canonical text (RFC 5952 for IPv6), others stripped of surrounding blanks.

    Raises InvalidListEntryError for an empty value or an IP address that is none."""
    text = value.strip()
    if not text:
        raise InvalidListEntryError(f"a {kind.value} entry needs a value")
    if kind is ListKind.EMAIL:
        return text.casefold()
    if kind is ListKind.IP:
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            raise InvalidListEntryError(f"{text!r} is no IP address") from None
    return text


@dataclass(frozen=True)
class RiskPolicy:
    """Windows, limits, points and thresholds. An attempt counts itself: with
    `card_review_attempt` 6, the 6th attempt with one card in `card_window` is held."""

    card_window: timedelta = timedelta(minutes=10)
    card_review_attempt: int = 6
    card_decline_attempt: int = 11
    address_window: timedelta = timedelta(hours=1)
    address_decline_attempt: int = 21
    card_testing_window: timedelta = timedelta(hours=1)
    card_testing_declines: int = 3
    """Declines of one customer or one IP address in the window after which the next attempt
    is held, whatever card it uses (card testing: many cards tried against one account)."""
    anomaly_min_paid_orders: int = 3
    anomaly_factor: int = 3
    """An amount above `anomaly_factor` times the customer's median paid order scores points."""
    anomaly_points: int = 30
    new_account_age: timedelta = timedelta(hours=24)
    new_account_review_amount: int = 50_000
    """Minor units (500.00 in a two-decimal currency) from which a new account's order is held."""
    review_score: int = 65
    decline_score: int = 75
    anomaly_history: int = 100
    """How many of the customer's latest paid orders (in the charge's currency) the median is
    taken over: the customer's usual spend now, read in time that does not grow with history."""

    @property
    def card_attempts_counted(self) -> int:
        """Attempts with one card counted at most, this one included: one past the decline
        attempt (a larger count decides nothing more, and the explanation can still tell the
        decline attempt itself from a later one), so a card's history never slows a
        screening."""
        return self.card_decline_attempt + 1

    @property
    def address_attempts_counted(self) -> int:
        """Attempts from one address counted at most, this one included (as for cards)."""
        return self.address_decline_attempt + 1

    @property
    def declines_counted(self) -> int:
        """Declines of one customer or address counted at most (as for cards)."""
        return self.card_testing_declines + 1

    def __post_init__(self) -> None:
        counts = {
            "card_review_attempt": self.card_review_attempt,
            "card_decline_attempt": self.card_decline_attempt,
            "address_decline_attempt": self.address_decline_attempt,
            "card_testing_declines": self.card_testing_declines,
            "anomaly_factor": self.anomaly_factor,
            "anomaly_history": self.anomaly_history,
        }
        for name, count in counts.items():
            if count < 1:
                raise RiskPolicyError(f"{name} must be at least 1, not {count}")
        windows = {
            "card_window": self.card_window,
            "address_window": self.address_window,
            "card_testing_window": self.card_testing_window,
        }
        for name, window in windows.items():
            if window <= timedelta(0):
                raise RiskPolicyError(f"{name} must be longer than zero")
        if self.review_score > self.decline_score:
            raise RiskPolicyError(
                f"the review score ({self.review_score}) must not be above the decline score "
                f"({self.decline_score}): no order could be held for review"
            )
        if self.card_review_attempt > self.card_decline_attempt:
            raise RiskPolicyError(
                f"card_review_attempt ({self.card_review_attempt}) must not be above "
                f"card_decline_attempt ({self.card_decline_attempt})"
            )


@dataclass(frozen=True)
class Attempt:
    """The charge to decide on, as the payment service knows it."""

    customer_id: str
    email: str | None
    address: str | None
    """The client's IP address when it placed the order, if known."""
    card_fingerprint: str | None
    amount: int
    """Minor units."""
    account_created_at: datetime | None
    at: datetime


@dataclass(frozen=True)
class Counters:
    """The signals at decision time, read in the decision's transaction."""

    card_attempts: int
    """Attempts with this card in `card_window`, this one included, counted up to
    `RiskPolicy.card_attempts_counted`."""
    address_attempts: int
    """Attempts from this IP address in `address_window`, this one included, counted up to
    `RiskPolicy.address_attempts_counted`."""
    customer_declines: int
    """The customer's declined attempts in `card_testing_window` before this one, counted up
    to `RiskPolicy.declines_counted`."""
    address_declines: int
    """Declined attempts from this IP address in `card_testing_window` before this one,
    counted up to `RiskPolicy.declines_counted`."""
    paid_orders: int
    """The customer's orders paid before this one, in this currency, counted up to
    `RiskPolicy.anomaly_history`."""
    median_paid_amount: int | None
    """The median amount of those orders (the latest `anomaly_history`), minor units."""


@dataclass(frozen=True)
class Reason:
    """One rule that matched: its name, the points it scored (0 for a rule that decides by
    itself) and what it saw."""

    rule: str
    points: int
    detail: str


@dataclass(frozen=True)
class Assessment:
    decision: RiskDecision
    score: int
    reasons: tuple[Reason, ...]
    """Every rule that matched; the first one decided, unless the score did (`score`)."""
    counters: Counters | None
    """What the rules read (None when the check could not run)."""


UNAVAILABLE = "risk_check_unavailable"


def unavailable(why: str) -> Assessment:
    """The decision when the check cannot run (its store unreachable, a timeout): the order is
    held for review, never approved or declined blind."""
    return Assessment(RiskDecision.REVIEW, 0, (Reason(UNAVAILABLE, 0, why),), None)


def assess(
    attempt: Attempt,
    counters: Counters,
    entries: tuple[ListEntry, ...] | list[ListEntry],
    policy: RiskPolicy,
) -> Assessment:
    """Decide on `attempt` with `counters` and the list `entries` (in their normalized form)."""
    listed = _listed(attempt, entries)
    for action, decision in (
        (ListAction.ALLOW, RiskDecision.APPROVE),
        (ListAction.BLOCK, RiskDecision.DECLINE),
    ):
        matched = [entry for entry in listed if entry.action is action]
        if matched:
            reasons = tuple(
                Reason(
                    f"{action.value}_list",
                    0,
                    f"the {entry.kind.value} is on the {action.value}-list",
                )
                for entry in matched
            )
            return Assessment(decision, 0, reasons, counters)

    deciding = [
        (decision, reason)
        for decision, reason in _decisive_rules(attempt, counters, policy)
        if reason is not None
    ]
    scored = [reason for reason in _scoring_rules(attempt, counters, policy) if reason is not None]
    score = sum(reason.points for reason in scored)
    reasons = tuple(reason for _, reason in deciding) + tuple(scored)
    if deciding:
        return Assessment(deciding[0][0], score, reasons, counters)
    if score >= policy.decline_score:
        threshold = Reason("score", 0, f"score {score} ≥ decline threshold {policy.decline_score}")
        return Assessment(RiskDecision.DECLINE, score, (*reasons, threshold), counters)
    if score >= policy.review_score:
        threshold = Reason("score", 0, f"score {score} ≥ review threshold {policy.review_score}")
        return Assessment(RiskDecision.REVIEW, score, (*reasons, threshold), counters)
    return Assessment(RiskDecision.APPROVE, score, reasons, counters)


def _listed(attempt: Attempt, entries: tuple[ListEntry, ...] | list[ListEntry]) -> list[ListEntry]:
    seen: dict[ListKind, str | None] = {
        ListKind.CARD_FINGERPRINT: attempt.card_fingerprint,
        ListKind.EMAIL: attempt.email,
        ListKind.IP: attempt.address,
        ListKind.CUSTOMER: attempt.customer_id,
    }
    values: dict[ListKind, str] = {}
    for kind, value in seen.items():
        if value is None:
            continue
        try:
            values[kind] = normalized(kind, value)
        except InvalidListEntryError:
            continue  # nothing on a list can match a value that is none of its kind
    return [entry for entry in entries if values.get(entry.kind) == entry.value]


def _decisive_rules(
    attempt: Attempt, counters: Counters, policy: RiskPolicy
) -> list[tuple[RiskDecision, Reason | None]]:
    """Rules that decide by themselves, the declining ones first."""
    card_attempts = _at_least(counters.card_attempts, policy.card_attempts_counted)
    card = f"attempt {card_attempts} with this card in {_span(policy.card_window)}"
    address_attempts = _at_least(counters.address_attempts, policy.address_attempts_counted)
    address = f"attempt {address_attempts} from {attempt.address} in {_span(policy.address_window)}"
    declines = max(counters.customer_declines, counters.address_declines)
    account_age = (
        attempt.at - attempt.account_created_at if attempt.account_created_at is not None else None
    )
    return [
        (
            RiskDecision.DECLINE,
            Reason("card_velocity_decline", 0, card)
            if attempt.card_fingerprint and counters.card_attempts >= policy.card_decline_attempt
            else None,
        ),
        (
            RiskDecision.DECLINE,
            Reason("address_velocity", 0, address)
            if attempt.address and counters.address_attempts >= policy.address_decline_attempt
            else None,
        ),
        (
            RiskDecision.REVIEW,
            Reason("card_velocity_review", 0, card)
            if attempt.card_fingerprint and counters.card_attempts >= policy.card_review_attempt
            else None,
        ),
        (
            RiskDecision.REVIEW,
            Reason(
                "card_testing",
                0,
                f"{_at_least(counters.customer_declines, policy.declines_counted)} declines of "
                f"this customer and {_at_least(counters.address_declines, policy.declines_counted)}"
                " from this IP address in "
                f"{_span(policy.card_testing_window)}",
            )
            if declines >= policy.card_testing_declines
            else None,
        ),
        (
            RiskDecision.REVIEW,
            Reason(
                "new_account",
                0,
                f"account {_span(account_age)} old, order of {attempt.amount} minor units",
            )
            if account_age is not None
            and account_age < policy.new_account_age
            and attempt.amount >= policy.new_account_review_amount
            else None,
        ),
    ]


def _scoring_rules(attempt: Attempt, counters: Counters, policy: RiskPolicy) -> list[Reason | None]:
    median = counters.median_paid_amount
    anomalous = (
        counters.paid_orders >= policy.anomaly_min_paid_orders
        and median is not None
        and attempt.amount > policy.anomaly_factor * median
    )
    return [
        Reason(
            "amount_anomaly",
            policy.anomaly_points,
            f"{attempt.amount} is over {policy.anomaly_factor} times the median {median} of "
            f"{counters.paid_orders} paid orders",
        )
        if anomalous
        else None
    ]


def _at_least(count: int, counted: int) -> str:
    """A count as the rules read it: one that reached the most counted may be larger."""
    return f"{count} or more" if count >= counted else str(count)


def _span(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
