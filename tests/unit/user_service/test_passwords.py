"""Argon2id hashing: hashes that verify only their password, a dummy that verifies nothing,
and stale parameters recognised for rehashing."""

from __future__ import annotations

import argon2

from user_service.passwords import Passwords

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
