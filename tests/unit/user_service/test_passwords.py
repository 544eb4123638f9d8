"""Argon2id hashing: hashes that verify only their password, a dummy that verifies nothing,
stale parameters recognised for rehashing, and hashing in bounded turns off the event loop."""

from __future__ import annotations

import asyncio
import os
import threading

import argon2
import pytest

from user_service.passwords import HashingBusyError, Passwords

# Cheap parameters keep the test fast; the service uses argon2-cffi's defaults.
FAST = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


async def test_a_hash_is_argon2id_salted_and_verifies_only_its_password() -> None:
    passwords = Passwords(FAST)
    first = await passwords.hash("correct horse battery")
    second = await passwords.hash("correct horse battery")
    assert first.startswith("$argon2id$")
    assert first != second  # salted
    assert "correct horse battery" not in first
    assert await passwords.verify(first, "correct horse battery")
    assert not await passwords.verify(first, "correct horse batterY")
    assert not await passwords.verify("not a hash", "correct horse battery")


async def test_without_a_hash_nothing_verifies() -> None:
    passwords = Passwords(FAST)
    assert not await passwords.verify(None, "")
    assert not await passwords.verify(None, "correct horse battery")


async def test_hashes_made_with_other_parameters_need_rehashing() -> None:
    old = await Passwords(FAST).hash("correct horse battery")
    current = Passwords()  # the service's: argon2-cffi's defaults
    assert current.needs_rehash(old)
    assert await current.verify(old, "correct horse battery")  # still verifies meanwhile
    fresh = await current.hash("correct horse battery")
    assert not current.needs_rehash(fresh)
    assert "m=65536,t=3,p=4" in fresh


class HeldHasher(argon2.PasswordHasher):
    """Hashes only once `release` is set, so that a test can hold every turn."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.release = threading.Event()

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        if not self.release.wait(timeout=10):
            raise TimeoutError("the test never released the hasher")
        return super().hash(password, salt=salt)


async def test_past_the_turns_and_the_queue_hashing_is_refused_at_once() -> None:
    hasher = HeldHasher()
    hasher.release.set()
    passwords = Passwords(hasher, concurrency=2, queue=1)  # the dummy hash is made at once
    hasher.release.clear()
    held = [asyncio.create_task(passwords.hash(f"password {n}")) for n in range(3)]
    await asyncio.sleep(0.05)  # two hashing, one waiting
    with pytest.raises(HashingBusyError, match="try again"):
        await passwords.hash("one too many")
    with pytest.raises(HashingBusyError):
        await passwords.verify(None, "one too many")
    assert not any(task.done() for task in held)
    hasher.release.set()
    assert all(h.startswith("$argon2id$") for h in await asyncio.gather(*held))
    # Turns free again once those are done.
    assert await passwords.verify(await passwords.hash("now it fits"), "now it fits")


async def test_hashing_runs_off_the_event_loop() -> None:
    hasher = HeldHasher()
    hasher.release.set()
    passwords = Passwords(hasher, concurrency=1, queue=0)
    hasher.release.clear()
    hashing = asyncio.create_task(passwords.hash("correct horse battery"))
    ticks = 0
    for _ in range(5):  # the loop keeps serving while the hash waits in its thread
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 5
    assert not hashing.done()
    hasher.release.set()
    assert (await hashing).startswith("$argon2id$")


def test_by_default_one_turn_per_cpu() -> None:
    assert Passwords(FAST).concurrency == (os.cpu_count() or 1)
