"""The gateway's rules: which service serves a path and who may call it, token buckets, and the
circuit breaker each upstream has.

Pure Python: no sockets, no framework. Time comes from an injected clock (or is passed in), so
tests drive these state machines with a fake one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from choreo.errors import ChoreoError

API_PREFIX = "/api/v1"

Clock = Callable[[], float]


class GatewayError(ChoreoError):
    """Root of the gateway's errors."""


# --- routing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """Where a request goes, and whether it may go there without a token."""

    upstream: str
    public: bool


# First match wins; a prefix matches itself and what follows it after a `/`, and its `*`
# segment any one segment (an order's risk explanation is the payment service's).
_ROUTES: tuple[tuple[str, str], ...] = (
    ("/auth", "user"),
    ("/users", "user"),
    ("/products", "inventory"),
    ("/payment-methods", "payment"),
    ("/payments", "payment"),
    ("/admin/payments", "payment"),
    ("/admin/risk", "payment"),
    ("/admin/reviews", "payment"),
    ("/admin/orders/*/risk", "payment"),
    ("/webhooks/stripe", "payment"),
    ("/orders", "order"),
    ("/admin/orders", "order"),
    ("/admin/reports", "order"),
    ("/notifications", "notification"),
)

_PUBLIC: frozenset[tuple[str, str]] = frozenset(
    {
        ("POST", "/auth/register"),
        ("POST", "/auth/login"),
        ("POST", "/auth/refresh"),
        ("POST", "/auth/password-reset"),
        ("POST", "/auth/password-reset/confirm"),
        ("GET", "/auth/jwks"),
        ("HEAD", "/auth/jwks"),
        ("POST", "/products/lookup"),
        ("POST", "/webhooks/stripe"),  # Stripe signs it; the payment service verifies that
    }
)
_PUBLIC_READS = "/products"  # the catalog, and every product in it
_READS = frozenset({"GET", "HEAD"})

UPSTREAMS: tuple[str, ...] = tuple(dict.fromkeys(upstream for _, upstream in _ROUTES))


def _under(path: str, prefix: str) -> bool:
    if "*" not in prefix:
        return path == prefix or path.startswith(prefix + "/")
    wanted = prefix.split("/")
    segments = path.split("/")
    return len(segments) >= len(wanted) and all(
        want == have or (want == "*" and have != "")
        for want, have in zip(wanted, segments, strict=False)
    )


def route_for(method: str, path: str) -> Route | None:
    """The route of a request to `path` (the decoded path, `/api/v1/...`), or None.

    Paths with `.` or `..` segments have no route: a service resolving them could serve what
    the gateway let through as something else.
    """
    if not _under(path, API_PREFIX):
        return None
    local = path[len(API_PREFIX) :]
    if any(segment in {".", ".."} for segment in local.split("/")):
        return None
    upstream = next((up for prefix, up in _ROUTES if _under(local, prefix)), None)
    if upstream is None:
        return None
    public = (method, local) in _PUBLIC or (method in _READS and _under(local, _PUBLIC_READS))
    return Route(upstream, public)


def owns_path(upstream: str, path: str) -> bool:
    """Whether the gateway sends requests for `path` (a path or a path template) to `upstream`."""
    route = route_for("GET", path)
    return route is not None and route.upstream == upstream


def is_public(method: str, path: str) -> bool:
    route = route_for(method.upper(), path)
    return route is not None and route.public


def client_address(peer: str | None, forwarded_for: str | None, *, trust_forwarded: bool) -> str:
    """The address a client's requests are counted against.

    Behind a trusted proxy, the last `X-Forwarded-For` entry is the one that proxy added (the
    address it saw); entries before it are whatever the client sent, so they are never used.
    """
    if trust_forwarded and forwarded_for:
        last = forwarded_for.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return peer or "unknown"


# --- token buckets -------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """A token bucket's refill rate (tokens per second) and size (the largest burst)."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError(f"a limit needs a positive rate and a burst of at least 1: {self}")

    @property
    def full_after_seconds(self) -> float:
        """How long an empty bucket takes to fill up (after that it is as good as new)."""
        return self.burst / self.per_second


@dataclass
class TokenBucket:
    """Holds up to `limit.burst` tokens, refilled continuously at `limit.per_second`."""

    limit: Limit
    tokens: float
    updated_at: float

    @classmethod
    def full(cls, limit: Limit, now: float) -> TokenBucket:
        return cls(limit, float(limit.burst), now)

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated_at)
        self.tokens = min(float(self.limit.burst), self.tokens + elapsed * self.limit.per_second)
        self.updated_at = max(self.updated_at, now)

    def is_full(self, now: float) -> bool:
        return now - self.updated_at >= self.limit.full_after_seconds or self.tokens >= (
            self.limit.burst
        )

    def seconds_until_token(self) -> float:
        return max(0.0, (1.0 - self.tokens) / self.limit.per_second)


@dataclass(frozen=True)
class Admission:
    """The answer to one request: let it in or not, and what to tell the client."""

    allowed: bool
    limit: int
    """The burst of the bucket with the fewest tokens left (X-RateLimit-Limit)."""
    remaining: int
    """Whole tokens left in that bucket (X-RateLimit-Remaining)."""
    retry_after: float
    """Seconds until the request would be let in (0 when it is)."""

    @property
    def retry_after_header(self) -> str:
        return str(retry_after_seconds(self.retry_after))


def retry_after_seconds(seconds: float) -> int:
    """A `Retry-After` value: whole seconds, rounded up, at least 1 (sooner would be refused)."""
    return max(1, math.ceil(seconds))


def admit(buckets: Sequence[TokenBucket], now: float) -> Admission:
    """Take one token from every bucket if each has one; otherwise take none.

    A request is counted against its user and its address at once: refused by either, it costs
    neither (a refused request must not eat the other bucket's allowance).
    """
    if not buckets:
        raise ValueError("admit() needs at least one bucket")
    for bucket in buckets:
        bucket.refill(now)
    short = [bucket for bucket in buckets if bucket.tokens < 1.0]
    if not short:
        for bucket in buckets:
            bucket.tokens -= 1.0
    tightest = min(buckets, key=lambda bucket: bucket.tokens)
    return Admission(
        allowed=not short,
        limit=tightest.limit.burst,
        remaining=max(0, math.floor(tightest.tokens)),
        retry_after=max((bucket.seconds_until_token() for bucket in short), default=0.0),
    )


# --- circuit breaker -----------------------------------------------------------------------


class BreakerState(StrEnum):
    CLOSED = "closed"
    """Requests go through; consecutive failures are counted."""
    OPEN = "open"
    """Requests are refused at once until the cool-down has passed."""
    HALF_OPEN = "half_open"
    """One probe request goes through: its outcome closes the circuit or opens it again."""


class CircuitBreaker:
    """Stops sending requests to an upstream that keeps failing, and tries it again later.

    Closed until `failure_threshold` consecutive failures; then open for `cooldown_seconds`;
    then half-open: the next request is let through as a probe, the others are refused until
    its outcome is known. A probe that never reports (its caller went away) is given up after
    another cool-down, and the next request becomes the probe.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown_seconds: float = 10.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or cooldown_seconds <= 0:
            raise ValueError("a breaker needs a threshold of at least 1 and a positive cool-down")
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_started_at: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self.cooldown_seconds:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """Whether a request may go to the upstream now (a probe, when half-open)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        now = self._clock()
        probe_given_up = (
            self._probe_started_at is not None
            and now - self._probe_started_at >= self.cooldown_seconds
        )
        if self._probe_started_at is None or probe_given_up:
            self._probe_started_at = now
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until a request may be let through again (0 when one may be now)."""
        if self._opened_at is None:
            return 0.0
        now = self._clock()
        if self._probe_started_at is not None:
            return max(0.0, self._probe_started_at + self.cooldown_seconds - now)
        return max(0.0, self._opened_at + self.cooldown_seconds - now)

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probe_started_at = None

    def record_failure(self) -> None:
        self._failures += 1
        state = self.state
        if state is BreakerState.HALF_OPEN or (
            state is BreakerState.CLOSED and self._failures >= self.failure_threshold
        ):
            # One failure too many, or a failed probe: open (again) for a full cool-down. A
            # request that was already under way when the circuit opened does not extend it.
            self._opened_at = self._clock()
            self._probe_started_at = None
