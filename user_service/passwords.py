"""Password hashing with Argon2id (argon2-cffi's defaults, RFC 9106's low-memory profile).

Hashing is deliberately slow and memory-hungry, so it runs in worker threads (the C code
releases the GIL), at most `concurrency` at a time, never on the event loop. At most `queue`
more wait for a turn; past that a hash or verification is refused at once (HashingBusyError),
so a flood of sign-ins is turned away in microseconds instead of making every caller wait
behind it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable
from typing import TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from choreo.errors import RetriableError
from user_service.domain import UserError

T = TypeVar("T")

# What a refused caller is asked to wait: a turn comes up every few hundred milliseconds.
BUSY_RETRY_AFTER_SECONDS = 1


class HashingBusyError(UserError, RetriableError):
    """Every hashing turn is taken and the queue is full: try again in a moment."""

    def __init__(self) -> None:
        super().__init__(
            "Too many passwords are being checked right now; try again in "
            f"{BUSY_RETRY_AFTER_SECONDS} s."
        )


class Passwords:
    """Hashes and verifies passwords (already normalised by the domain's rules)."""

    def __init__(
        self, hasher: argon2.PasswordHasher | None = None, concurrency: int = 0, queue: int = 16
    ) -> None:
        """`concurrency` hashes at once (0: one per CPU), `queue` more waiting at most."""
        self._hasher = hasher or argon2.PasswordHasher()
        self.concurrency = concurrency or os.cpu_count() or 1
        self.queue = queue
        self._slots = asyncio.Semaphore(self.concurrency)
        self._admitted = 0  # hashing or waiting to
        # Verified against when an account does not exist, so that answering "wrong e-mail"
        # takes as long as answering "wrong password".
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        """The password's hash; HashingBusyError when the queue is full."""
        return await self._in_turn(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether `password` matches `password_hash`; with None, spends the same time on a
        hash nothing matches and answers False. HashingBusyError when the queue is full."""
        return await self._in_turn(self._verify, password_hash, password)

    async def _in_turn(self, work: Callable[..., T], *args: object) -> T:
        if self._admitted >= self.concurrency + self.queue:
            raise HashingBusyError()
        self._admitted += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(work, *args)
        finally:
            self._admitted -= 1

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            self._hasher.verify(password_hash or self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than the hasher's current ones."""
        return self._hasher.check_needs_rehash(password_hash)
