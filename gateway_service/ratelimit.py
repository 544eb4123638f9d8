"""Rate limits: token buckets per user and per client address, kept in memory or in Redis.

In memory, each gateway process counts on its own. With `REDIS_URL`, every check is one Lua
script run atomically by Redis on Redis's clock, so all replicas of the gateway share the same
buckets. A Redis that cannot be reached lets requests through (logged and counted): the limits
protect the services, and must not become the reason they cannot be used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Final, Protocol

import redis.asyncio as redis
from prometheus_client import Counter
from redis.exceptions import RedisError

from gateway_service.domain import Admission, CircuitBreaker, Clock, Limit, TokenBucket, admit

log = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS: Final = 0.5
FAIL_OPEN_LOG_INTERVAL_SECONDS: Final = 30.0

Charge = tuple[str, Limit]
"""One bucket a request is counted against: its key (`user:<sub>`, `address:<ip>`) and limit."""

RATE_LIMIT_FAIL_OPEN = Counter(
    "gateway_rate_limit_fail_open",
    "Requests let through without a rate-limit check because Redis could not be reached.",
)


class RateLimiter(Protocol):
    async def admit(self, charges: Sequence[Charge]) -> Admission | None:
        """Count a request against each bucket of `charges` (all or none); None when it could
        not be counted and is let through."""
        ...

    async def aclose(self) -> None: ...


class MemoryRateLimiter:
    """Buckets in this process's memory; full buckets are forgotten from time to time."""

    def __init__(self, *, clock: Clock = time.monotonic, prune_every: int = 4096) -> None:
        self._clock = clock
        self._prune_every = prune_every
        self._checks = 0
        self._buckets: dict[str, TokenBucket] = {}

    async def admit(self, charges: Sequence[Charge]) -> Admission:
        now = self._clock()
        buckets = [self._bucket(key, limit, now) for key, limit in charges]
        admission = admit(buckets, now)
        self._checks += 1
        if self._checks % self._prune_every == 0:
            # A full bucket is the same as no bucket: dropping them bounds the memory.
            self._buckets = {k: b for k, b in self._buckets.items() if not b.is_full(now)}
        return admission

    def __len__(self) -> int:
        """How many buckets are held."""
        return len(self._buckets)

    def _bucket(self, key: str, limit: Limit, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None or bucket.limit != limit:
            bucket = self._buckets[key] = TokenBucket.full(limit, now)
        return bucket

    async def aclose(self) -> None:
        self._buckets.clear()


# The same arithmetic as `domain.admit`, on Redis's clock, in one atomic step.
# KEYS: the buckets. ARGV: each bucket's rate (tokens per second), then its burst.
# Returns {allowed (0/1), limit, remaining, retry_after seconds (as a string)}.
ADMIT_SCRIPT: Final = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local tokens, allowed, retry_after = {}, 1, 0
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'at')
  local held, at = tonumber(state[1]), tonumber(state[2])
  if held == nil or at == nil then held, at = burst, now end
  held = math.min(burst, held + math.max(0, now - at) * rate)
  tokens[i] = held
  if held < 1 then
    allowed = 0
    retry_after = math.max(retry_after, (1 - held) / rate)
  end
end
local tightest = 1
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  if allowed == 1 then tokens[i] = tokens[i] - 1 end
  if tokens[i] < tokens[tightest] then tightest = i end
  redis.call('HSET', KEYS[i], 'tokens', tostring(tokens[i]), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(burst / rate * 1000) + 1000)
end
return {allowed, tonumber(ARGV[2 * tightest]), math.max(0, math.floor(tokens[tightest])),
        tostring(retry_after)}
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every gateway process using the same Redis and prefix."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        breaker: CircuitBreaker | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(ADMIT_SCRIPT)
        # Once Redis is known to be down, requests stop waiting for its timeouts for a while.
        self._breaker = breaker or CircuitBreaker(failure_threshold=3, cooldown_seconds=5.0)
        self._clock = clock
        self._unlogged_failures = 0
        self._last_logged_at = float("-inf")

    @classmethod
    def from_url(cls, url: str, *, prefix: str) -> RedisRateLimiter:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
        )
        return cls(client, prefix=prefix)

    async def admit(self, charges: Sequence[Charge]) -> Admission | None:
        if not self._breaker.allow():
            self._fail_open("Redis failed repeatedly; not asking it for a few seconds")
            return None
        keys = [f"{self._prefix}{key}" for key, _ in charges]
        arguments: list[str | int | float] = []
        for _, limit in charges:
            arguments += [repr(limit.per_second), limit.burst]
        try:
            allowed, limit, remaining, retry_after = await self._script(keys=keys, args=arguments)
        except (RedisError, OSError) as error:
            self._breaker.record_failure()
            self._fail_open(repr(error))
            return None
        self._breaker.record_success()
        return Admission(
            allowed=bool(allowed),
            limit=int(limit),
            remaining=int(remaining),
            retry_after=float(retry_after),
        )

    def _fail_open(self, reason: str) -> None:
        RATE_LIMIT_FAIL_OPEN.inc()
        self._unlogged_failures += 1
        now = self._clock()
        if now - self._last_logged_at >= FAIL_OPEN_LOG_INTERVAL_SECONDS:
            log.warning(
                "rate limits not enforced: Redis is unreachable (%s); %d request(s) let through "
                "unchecked since the last warning",
                reason,
                self._unlogged_failures,
            )
            self._last_logged_at = now
            self._unlogged_failures = 0

    async def aclose(self) -> None:
        await self._client.aclose()
