"""Password hashing with Argon2id (argon2-cffi's defaults, RFC 9106's low-memory profile).

Hashing is deliberately slow and memory-hungry, so it runs in worker threads (the C code
releases the GIL) and at most `concurrency` at a time, never on the event loop.
"""

from __future__ import annotations

import asyncio
import os
import secrets

import argon2
from argon2.exceptions import InvalidHashError, VerificationError


class Passwords:
    """Hashes and verifies passwords (already normalised by the domain's rules)."""

    def __init__(self, hasher: argon2.PasswordHasher | None = None, concurrency: int = 0) -> None:
        self._hasher = hasher or argon2.PasswordHasher()
        self._slots = asyncio.Semaphore(concurrency or os.cpu_count() or 1)
        # Verified against when an account does not exist, so that answering "wrong e-mail"
        # takes as long as answering "wrong password".
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether `password` matches `password_hash`; with None, spends the same time on a
        hash nothing matches and answers False."""
        async with self._slots:
            return await asyncio.to_thread(self._verify, password_hash, password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            self._hasher.verify(password_hash or self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than the hasher's current ones."""
        return self._hasher.check_needs_rehash(password_hash)
