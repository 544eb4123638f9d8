"""The gateway's rules: routing and public routes, client addresses, token buckets, breakers."""

from __future__ import annotations

import pytest

from gateway_service.domain import (
    BreakerState,
    CircuitBreaker,
    Limit,
    Route,
    TokenBucket,
    admit,
    client_address,
    retry_after_seconds,
    route_for,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- routing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("POST", "/api/v1/auth/register", Route("user", public=True)),
        ("POST", "/api/v1/auth/login", Route("user", public=True)),
        ("POST", "/api/v1/auth/refresh", Route("user", public=True)),
        ("POST", "/api/v1/auth/password-reset", Route("user", public=True)),
        ("POST", "/api/v1/auth/password-reset/confirm", Route("user", public=True)),
        ("POST", "/api/v1/auth/password", Route("user", public=False)),
        ("POST", "/api/v1/auth/logout", Route("user", public=False)),
        ("GET", "/api/v1/auth/jwks", Route("user", public=True)),
        ("POST", "/api/v1/auth/jwks", Route("user", public=False)),
        ("GET", "/api/v1/users/me", Route("user", public=False)),
        ("DELETE", "/api/v1/users/42", Route("user", public=False)),
        ("GET", "/api/v1/products", Route("inventory", public=True)),
        ("GET", "/api/v1/products/9f1c", Route("inventory", public=True)),
        ("HEAD", "/api/v1/products/9f1c", Route("inventory", public=True)),
        ("POST", "/api/v1/products/lookup", Route("inventory", public=True)),
        ("POST", "/api/v1/products", Route("inventory", public=False)),
        ("PATCH", "/api/v1/products/9f1c", Route("inventory", public=False)),
        ("POST", "/api/v1/products/9f1c/stock", Route("inventory", public=False)),
        ("POST", "/api/v1/payment-methods", Route("payment", public=False)),
        ("GET", "/api/v1/payments", Route("payment", public=False)),
        ("GET", "/api/v1/admin/payments", Route("payment", public=False)),
        ("POST", "/api/v1/orders", Route("order", public=False)),
        ("GET", "/api/v1/orders/1/timeline", Route("order", public=False)),
        ("GET", "/api/v1/admin/orders", Route("order", public=False)),
        ("GET", "/api/v1/notifications", Route("notification", public=False)),
    ],
)
def test_each_path_goes_to_its_service(method: str, path: str, route: Route) -> None:
    assert route_for(method, path) == route


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1",
        "/api/v1/",
        "/api/v1/nothing",
        "/api/v1/productsx",  # a prefix matches whole segments only
        "/api/v1/admin",
        "/api/v1/admin/users",
        "/api/v2/products",
        "/products",
        # Dot segments could make a public path name a protected one after normalization.
        "/api/v1/products/../orders",
        "/api/v1/products/./lookup",
        "/api/v1/products/..",
    ],
)
def test_other_paths_have_no_route(path: str) -> None:
    assert route_for("GET", path) is None


def test_only_the_address_the_trusted_proxy_saw_counts() -> None:
    assert client_address("10.0.0.9", "6.6.6.6", trust_forwarded=False) == "10.0.0.9"
    assert client_address("10.0.0.9", "6.6.6.6", trust_forwarded=True) == "6.6.6.6"
    # What the client put in front of the proxy's entry is the client's own claim.
    assert client_address("10.0.0.9", "1.2.3.4, 6.6.6.6", trust_forwarded=True) == "6.6.6.6"
    assert client_address("10.0.0.9", " , ", trust_forwarded=True) == "10.0.0.9"
    assert client_address("10.0.0.9", None, trust_forwarded=True) == "10.0.0.9"
    assert client_address(None, None, trust_forwarded=False) == "unknown"


# --- token buckets -------------------------------------------------------------------------


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket.full(Limit(per_second=2.0, burst=3), now=0.0)
    results = [admit([bucket], now=0.0) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining for r in results] == [2, 1, 0, 0]
    refused = results[-1]
    assert refused.limit == 3
    assert refused.retry_after == pytest.approx(0.5)
    assert refused.retry_after_header == "1"

    assert not admit([bucket], now=0.4).allowed
    assert admit([bucket], now=0.5).allowed  # one token after 0.5 s at 2 per second
    assert not admit([bucket], now=0.5).allowed

    # A long pause fills the bucket up to its burst, no further.
    results = [admit([bucket], now=100.0) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]


def test_a_refused_request_costs_no_bucket_anything() -> None:
    user = TokenBucket.full(Limit(per_second=1.0, burst=1), now=0.0)
    address = TokenBucket.full(Limit(per_second=1.0, burst=5), now=0.0)
    assert admit([user, address], now=0.0).allowed
    refused = admit([user, address], now=0.0)
    assert not refused.allowed
    assert address.tokens == pytest.approx(4.0)  # only the admitted request was counted
    assert (refused.limit, refused.remaining) == (1, 0)  # the bucket that ran out is reported


def test_the_tightest_bucket_is_reported() -> None:
    user = TokenBucket.full(Limit(per_second=1.0, burst=10), now=0.0)
    address = TokenBucket.full(Limit(per_second=1.0, burst=3), now=0.0)
    admission = admit([user, address], now=0.0)
    assert (admission.allowed, admission.limit, admission.remaining) == (True, 3, 2)


def test_retry_after_waits_for_the_slowest_empty_bucket() -> None:
    fast = TokenBucket.full(Limit(per_second=10.0, burst=1), now=0.0)
    slow = TokenBucket.full(Limit(per_second=0.25, burst=1), now=0.0)
    admit([fast, slow], now=0.0)
    refused = admit([fast, slow], now=0.0)
    assert refused.retry_after == pytest.approx(4.0)
    assert refused.retry_after_header == "4"


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    assert [retry_after_seconds(s) for s in (0.0, 0.01, 1.0, 1.2, 9.99)] == [1, 1, 1, 2, 10]


def test_a_limit_needs_a_positive_rate_and_a_burst() -> None:
    with pytest.raises(ValueError, match="positive rate"):
        Limit(per_second=0.0, burst=1)
    with pytest.raises(ValueError, match="burst"):
        Limit(per_second=1.0, burst=0)


# --- circuit breaker -----------------------------------------------------------------------


def test_the_circuit_opens_after_consecutive_failures_only() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_seconds=10.0, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # the count starts again
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.retry_after() == pytest.approx(10.0)
    clock.advance(7.5)
    assert not breaker.allow()
    assert breaker.retry_after() == pytest.approx(2.5)


def test_after_the_cool_down_one_probe_goes_through_and_its_success_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=10.0, clock=clock)
    breaker.record_failure()
    clock.advance(10.0)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # the others wait for its outcome
    assert not breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert all(breaker.allow() for _ in range(5))
    assert breaker.retry_after() == 0.0


def test_a_failed_probe_opens_the_circuit_for_another_cool_down() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown_seconds=10.0, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(10.0)
    assert breaker.allow()
    clock.advance(1.0)
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after() == pytest.approx(10.0)
    clock.advance(9.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()


def test_requests_already_under_way_do_not_extend_the_open_circuit() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=10.0, clock=clock)
    breaker.record_failure()
    clock.advance(6.0)
    breaker.record_failure()  # sent before the circuit opened, failed after
    assert breaker.retry_after() == pytest.approx(4.0)


def test_a_probe_that_never_reports_is_given_up_after_a_cool_down() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=10.0, clock=clock)
    breaker.record_failure()
    clock.advance(10.0)
    assert breaker.allow()  # this probe's caller goes away without an outcome
    clock.advance(5.0)
    assert not breaker.allow()
    assert breaker.retry_after() == pytest.approx(5.0)
    clock.advance(5.0)
    assert breaker.allow()  # a new probe
    assert not breaker.allow()


def test_a_breaker_needs_a_threshold_and_a_cool_down() -> None:
    with pytest.raises(ValueError, match="threshold"):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError, match="cool-down"):
        CircuitBreaker(cooldown_seconds=0)
