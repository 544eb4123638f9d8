"""The in-memory rate limiter: buckets per key, forgotten once full again."""

from __future__ import annotations

from gateway_service.domain import Limit
from gateway_service.ratelimit import MemoryRateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_each_key_has_its_own_bucket() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    limit = Limit(per_second=1.0, burst=2)
    alice = [("user:alice", limit)]
    assert [(await limiter.admit(alice)).allowed for _ in range(3)] == [True, True, False]
    assert (await limiter.admit([("user:bob", limit)])).allowed
    clock.now = 1.0
    assert (await limiter.admit(alice)).allowed


async def test_full_buckets_are_forgotten() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock, prune_every=4)
    limit = Limit(per_second=1.0, burst=2)
    for address in ("a", "b", "c"):
        await limiter.admit([(f"address:{address}", limit)])
    clock.now = 2.0  # every bucket has filled up again
    admission = await limiter.admit([("address:d", limit)])  # the fourth check prunes
    assert admission.remaining == 1
    assert len(limiter) == 1  # only d's, which is not full


async def test_a_changed_limit_starts_a_new_bucket() -> None:
    limiter = MemoryRateLimiter(clock=FakeClock())
    await limiter.admit([("user:alice", Limit(per_second=1.0, burst=1))])
    admission = await limiter.admit([("user:alice", Limit(per_second=1.0, burst=5))])
    assert (admission.allowed, admission.remaining) == (True, 4)
