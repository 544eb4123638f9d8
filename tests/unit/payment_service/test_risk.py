"""payment_service.risk: each rule at its limit and one short of it, the precedence of lists,
rules and score, the explanation of every decision, and policies refused."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from payment_service.risk import (
    UNAVAILABLE,
    Assessment,
    Attempt,
    Counters,
    InvalidListEntryError,
    ListAction,
    ListEntry,
    ListKind,
    RiskDecision,
    RiskPolicy,
    RiskPolicyError,
    assess,
    unavailable,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = RiskPolicy()
ATTEMPT = Attempt(
    customer_id="c-1",
    email="Ann@Example.com",
    address="203.0.113.7",
    card_fingerprint="fp_visa_1",
    amount=4_000,
    account_created_at=NOW - timedelta(days=30),
    at=NOW,
)
QUIET = Counters(
    card_attempts=1,
    address_attempts=1,
    customer_declines=0,
    address_declines=0,
    paid_orders=0,
    median_paid_amount=None,
)


def decide(
    attempt: Attempt = ATTEMPT,
    counters: Counters = QUIET,
    entries: tuple[ListEntry, ...] = (),
    policy: RiskPolicy = POLICY,
) -> Assessment:
    return assess(attempt, counters, entries, policy)


def rules(assessment: Assessment) -> list[str]:
    return [reason.rule for reason in assessment.reasons]


def test_a_quiet_attempt_is_approved_with_nothing_to_explain() -> None:
    assessment = decide()
    assert (assessment.decision, assessment.score, assessment.reasons) == (
        RiskDecision.APPROVE,
        0,
        (),
    )
    assert assessment.counters == QUIET


def test_the_sixth_attempt_with_one_card_in_ten_minutes_is_held_and_the_eleventh_declined() -> None:
    assert decide(counters=dataclasses.replace(QUIET, card_attempts=5)).decision == "APPROVE"
    sixth = decide(counters=dataclasses.replace(QUIET, card_attempts=6))
    assert (sixth.decision, rules(sixth)) == (RiskDecision.REVIEW, ["card_velocity_review"])
    assert sixth.reasons[0].detail == "attempt 6 with this card in 10 min"
    assert decide(counters=dataclasses.replace(QUIET, card_attempts=10)).decision == "REVIEW"
    eleventh = decide(counters=dataclasses.replace(QUIET, card_attempts=11))
    # Both rules matched and both are named; the declining one decided.
    assert eleventh.decision is RiskDecision.DECLINE
    assert rules(eleventh) == ["card_velocity_decline", "card_velocity_review"]


def test_the_twenty_first_attempt_from_one_address_in_an_hour_is_declined() -> None:
    assert decide(counters=dataclasses.replace(QUIET, address_attempts=20)).decision == "APPROVE"
    twenty_first = decide(counters=dataclasses.replace(QUIET, address_attempts=21))
    assert (twenty_first.decision, rules(twenty_first)) == (
        RiskDecision.DECLINE,
        ["address_velocity"],
    )
    assert twenty_first.reasons[0].detail == "attempt 21 from 203.0.113.7 in 1 h"


def test_after_three_declines_of_a_customer_or_an_address_the_next_attempt_is_held() -> None:
    for counters in (
        dataclasses.replace(QUIET, customer_declines=2, address_declines=2),
        dataclasses.replace(QUIET, customer_declines=3),
        dataclasses.replace(QUIET, address_declines=3),
    ):
        expected = (
            "APPROVE" if counters.customer_declines == counters.address_declines else "REVIEW"
        )
        assessment = decide(counters=counters)
        assert assessment.decision == expected, counters
    held = decide(counters=dataclasses.replace(QUIET, customer_declines=3))
    assert rules(held) == ["card_testing"]
    assert held.reasons[0].detail == (
        "3 declines of this customer and 0 from this IP address in 1 h"
    )


def test_a_large_order_of_a_new_account_is_held() -> None:
    young = dataclasses.replace(ATTEMPT, account_created_at=NOW - timedelta(hours=23))
    assert decide(dataclasses.replace(young, amount=49_999)).decision == "APPROVE"
    held = decide(dataclasses.replace(young, amount=50_000))
    assert (held.decision, rules(held)) == (RiskDecision.REVIEW, ["new_account"])
    assert held.reasons[0].detail == "account 23 h old, order of 50000 minor units"
    a_day_old = dataclasses.replace(young, account_created_at=NOW - timedelta(hours=24))
    assert decide(dataclasses.replace(a_day_old, amount=50_000)).decision == "APPROVE"


def test_an_amount_far_above_the_customers_median_scores_points_but_alone_decides_nothing() -> None:
    history = dataclasses.replace(QUIET, paid_orders=3, median_paid_amount=1_000)
    assert decide(dataclasses.replace(ATTEMPT, amount=3_000), history).score == 0
    anomalous = decide(dataclasses.replace(ATTEMPT, amount=3_001), history)
    assert (anomalous.decision, anomalous.score) == (RiskDecision.APPROVE, 30)
    assert anomalous.reasons[0].rule == "amount_anomaly"
    assert anomalous.reasons[0].points == 30
    # Too little history: no anomaly to speak of.
    two_orders = dataclasses.replace(history, paid_orders=2)
    assert decide(dataclasses.replace(ATTEMPT, amount=9_000), two_orders).score == 0


def test_the_score_holds_from_the_review_threshold_and_declines_from_the_decline_one() -> None:
    history = dataclasses.replace(QUIET, paid_orders=5, median_paid_amount=1_000)
    large = dataclasses.replace(ATTEMPT, amount=10_000)
    for points, expected in ((64, "APPROVE"), (65, "REVIEW"), (74, "REVIEW"), (75, "DECLINE")):
        policy = dataclasses.replace(POLICY, anomaly_points=points)
        assessment = decide(large, history, policy=policy)
        assert (assessment.score, assessment.decision) == (points, expected)
        if expected != "APPROVE":
            assert rules(assessment) == ["amount_anomaly", "score"]


def test_lists_come_first_the_allow_list_before_the_block_list() -> None:
    hot = dataclasses.replace(QUIET, card_attempts=50, address_attempts=50)
    blocked_ip = ListEntry.of(ListKind.IP, "203.0.113.7", ListAction.BLOCK)
    allowed_email = ListEntry.of(ListKind.EMAIL, " ann@EXAMPLE.com ", ListAction.ALLOW)
    allowed = decide(counters=hot, entries=(blocked_ip, allowed_email))
    assert (allowed.decision, rules(allowed)) == (RiskDecision.APPROVE, ["allow_list"])
    assert allowed.reasons[0].detail == "the email is on the allow-list"
    blocked = decide(entries=(blocked_ip,))
    assert (blocked.decision, rules(blocked)) == (RiskDecision.DECLINE, ["block_list"])
    for kind, value in (
        (ListKind.CARD_FINGERPRINT, "fp_visa_1"),
        (ListKind.CUSTOMER, "c-1"),
        (ListKind.EMAIL, "ann@example.com"),
    ):
        assert decide(entries=(ListEntry.of(kind, value, ListAction.BLOCK),)).decision == "DECLINE"
    other = ListEntry.of(ListKind.CARD_FINGERPRINT, "fp_other", ListAction.BLOCK)
    assert decide(entries=(other,)).decision == "APPROVE"


def test_list_values_are_compared_in_one_form_and_bad_ones_refused() -> None:
    assert ListEntry.of(ListKind.IP, "2001:DB8:0:0::1", ListAction.BLOCK).value == "2001:db8::1"
    assert decide(
        dataclasses.replace(ATTEMPT, address="2001:db8::1"),
        entries=(ListEntry.of(ListKind.IP, "2001:DB8:0:0::1", ListAction.BLOCK),),
    ).decision == ("DECLINE")
    with pytest.raises(InvalidListEntryError, match="no IP address"):
        ListEntry.of(ListKind.IP, "203.0.113.300", ListAction.BLOCK)
    with pytest.raises(InvalidListEntryError, match="needs a value"):
        ListEntry.of(ListKind.EMAIL, "  ", ListAction.ALLOW)


def test_an_attempt_without_card_or_address_skips_the_rules_that_need_them() -> None:
    unknown = dataclasses.replace(ATTEMPT, card_fingerprint=None, address=None)
    hot = dataclasses.replace(QUIET, card_attempts=50, address_attempts=50)
    assert decide(unknown, hot).decision is RiskDecision.APPROVE


def test_when_the_check_cannot_run_the_order_is_held_never_approved_or_declined() -> None:
    assessment = unavailable("the payment database did not answer in 2 s")
    assert assessment.decision is RiskDecision.REVIEW
    assert rules(assessment) == [UNAVAILABLE]
    assert assessment.counters is None


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"review_score": 80, "decline_score": 75}, "must not be above the decline score"),
        ({"card_review_attempt": 12}, "must not be above card_decline_attempt"),
        ({"card_testing_declines": 0}, "card_testing_declines must be at least 1"),
        ({"card_window": timedelta(0)}, "card_window must be longer than zero"),
    ],
)
def test_a_policy_that_cannot_work_is_refused(change: dict[str, object], said: str) -> None:
    with pytest.raises(RiskPolicyError, match=said):
        dataclasses.replace(POLICY, **change)  # type: ignore[arg-type]
