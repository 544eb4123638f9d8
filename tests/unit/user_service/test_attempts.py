"""Credential attempts: per address and per account, refused past the limit with how long to
wait, given back on success, refilled over the window, and bounded in memory."""

from __future__ import annotations

import pytest

from user_service.attempts import (
    PASSWORD_RESET,
    REGISTRATION,
    SIGN_IN,
    AttemptLimit,
    AttemptLimiter,
    TooManyAttemptsError,
    account_key,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> AttemptLimiter:
    return AttemptLimiter(
        per_address=AttemptLimit(10, 60.0), per_account=AttemptLimit(5, 60.0), clock=clock
    )


def test_an_address_is_refused_after_its_attempts_with_how_long_to_wait(
    limiter: AttemptLimiter, clock: FakeClock
) -> None:
    for _ in range(10):
        limiter.take(kind=SIGN_IN, address="203.0.113.7")
    with pytest.raises(TooManyAttemptsError) as refused:
        limiter.take(kind=SIGN_IN, address="203.0.113.7")
    assert refused.value.retry_after == pytest.approx(6.0)  # one attempt back every 6 s
    assert refused.value.retry_after_seconds == 6
    assert "try again in 6 s" in str(refused.value)
    # Another address is not affected.
    limiter.take(kind=SIGN_IN, address="198.51.100.2")
    # One comes back after its share of the window, and only one.
    clock.now += 6.0
    limiter.take(kind=SIGN_IN, address="203.0.113.7")
    with pytest.raises(TooManyAttemptsError):
        limiter.take(kind=SIGN_IN, address="203.0.113.7")


def test_an_account_is_refused_after_its_attempts_from_any_address(
    limiter: AttemptLimiter,
) -> None:
    for n in range(5):
        limiter.take(kind=SIGN_IN, address=f"10.0.0.{n}", email="ada@example.com")
    for email in ("ada@example.com", " ADA@Example.com ", "ada@example.com\n"):
        with pytest.raises(TooManyAttemptsError):
            limiter.take(kind=SIGN_IN, address="10.0.0.99", email=email)
    # Refused attempts took nothing from that address, and other accounts are not affected.
    for _ in range(5):
        limiter.take(kind=SIGN_IN, address="10.0.0.99", email="bob@example.com")
    for _ in range(5):
        limiter.take(kind=SIGN_IN, address="10.0.0.99")
    with pytest.raises(TooManyAttemptsError):
        limiter.take(kind=SIGN_IN, address="10.0.0.99")


def test_an_attempt_takes_from_both_buckets_or_neither(limiter: AttemptLimiter) -> None:
    for _ in range(5):
        limiter.take(kind=SIGN_IN, address="10.0.0.1", email="ada@example.com")
    with pytest.raises(TooManyAttemptsError):
        limiter.take(kind=SIGN_IN, address="10.0.0.1", email="ada@example.com")
    # The refused attempt took nothing from the address: 5 of its 10 are left.
    for _ in range(5):
        limiter.take(kind=SIGN_IN, address="10.0.0.1")
    with pytest.raises(TooManyAttemptsError):
        limiter.take(kind=SIGN_IN, address="10.0.0.1")


def test_attempts_given_back_are_not_counted(limiter: AttemptLimiter) -> None:
    for _ in range(50):
        limiter.give_back(limiter.take(kind=SIGN_IN, address="10.0.0.1", email="ada@example.com"))
    for _ in range(5):
        limiter.take(kind=SIGN_IN, address="10.0.0.1", email="ada@example.com")
    with pytest.raises(TooManyAttemptsError):
        limiter.take(kind=SIGN_IN, address="10.0.0.1", email="ada@example.com")


def test_giving_back_never_fills_a_bucket_past_its_size(limiter: AttemptLimiter) -> None:
    attempt = limiter.take(kind=SIGN_IN, address="10.0.0.1")
    limiter.give_back(attempt)
    limiter.give_back(attempt)
    for _ in range(10):
        limiter.take(kind=SIGN_IN, address="10.0.0.1")
    with pytest.raises(TooManyAttemptsError):
        limiter.take(kind=SIGN_IN, address="10.0.0.1")


def test_accounts_are_keyed_by_the_normalised_address_and_hold_no_address() -> None:
    assert account_key(" Ada@Example.COM ") == account_key("ada@example.com")
    assert account_key("ada@example.com") != account_key("bob@example.com")
    assert "ada" not in account_key("ada@example.com")
    # Text that is no address still names one account, however it is cased.
    assert account_key("Nobody") == account_key("nobody")
    assert account_key("x\ud800") != account_key("x")


def test_the_least_recently_used_buckets_are_forgotten_past_the_bound(clock: FakeClock) -> None:
    limiter = AttemptLimiter(
        per_address=AttemptLimit(1, 60.0),
        per_account=AttemptLimit(1, 60.0),
        clock=clock,
        max_buckets=100,
    )
    limiter.take(kind=SIGN_IN, address="10.0.0.1")
    for n in range(99):
        limiter.take(kind=SIGN_IN, address=f"10.1.0.{n}")
    with pytest.raises(TooManyAttemptsError):
        limiter.take(kind=SIGN_IN, address="10.0.0.1")  # still held, and now the most recently used
    limiter.take(kind=SIGN_IN, address="10.2.0.0")
    assert len(limiter) == 100
    with pytest.raises(TooManyAttemptsError):
        limiter.take(kind=SIGN_IN, address="10.0.0.1")


def test_a_limit_needs_an_attempt_and_a_window() -> None:
    for attempts, seconds in ((0, 60.0), (5, 0.0)):
        with pytest.raises(ValueError, match="limit"):
            AttemptLimit(attempts, seconds)


def test_registering_and_signing_in_are_counted_apart_per_address(limiter: AttemptLimiter) -> None:
    for n in range(10):
        limiter.take(kind=REGISTRATION, address="10.0.0.1", email=f"new{n}@example.com")
    with pytest.raises(TooManyAttemptsError):
        limiter.take(kind=REGISTRATION, address="10.0.0.1", email="another@example.com")
    # Those who registered from there still sign in from there.
    limiter.take(kind=SIGN_IN, address="10.0.0.1", email="new0@example.com")


def test_a_registration_that_succeeds_gives_back_the_account_s_attempt_only(
    limiter: AttemptLimiter,
) -> None:
    for _ in range(10):
        attempt = limiter.take(kind=REGISTRATION, address="10.0.0.1", email="ada@example.com")
        limiter.give_back(attempt, keep_address=True)
    with pytest.raises(TooManyAttemptsError):
        limiter.take(kind=REGISTRATION, address="10.0.0.1", email="bob@example.com")
    for _ in range(5):  # the account's five are all there
        limiter.take(kind=SIGN_IN, address="10.0.0.2", email="ada@example.com")


def test_reset_requests_do_not_lock_the_owner_out_of_signing_in(limiter: AttemptLimiter) -> None:
    """Found trying issue 13's fixes: five anonymous reset requests for an address made its
    owner's correct login a 429 for the rest of the minute."""
    for n in range(5):
        limiter.take(kind=PASSWORD_RESET, address=f"10.0.1.{n}", email="ada@example.com")
    with pytest.raises(TooManyAttemptsError):  # the e-mails an account can be sent stay few
        limiter.take(kind=PASSWORD_RESET, address="10.0.1.9", email="ada@example.com")
    limiter.take(kind=SIGN_IN, address="192.0.2.1", email="ada@example.com")
