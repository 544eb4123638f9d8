"""Credential attempts: how many each client address and each account may make.

Every attempt on a credential route takes a token from its client address's bucket for that
kind of attempt (signing in: login, refresh and a password change; registering; resetting a
password: its request and its confirmation) and, when it names an account (the e-mail
address, normalised), from that account's too (one bucket for signing in and registering,
another for reset requests, so that strangers asking to reset an account's password cannot
lock its owner out of signing in): a bucket holds `attempts` tokens and refills at
`attempts` per `per_seconds`. An attempt finding either bucket empty is refused with how long
to wait, before any password is hashed. A login, refresh, password change or reset
confirmation that succeeds gives its tokens back, so the buckets count failures (and attempts
still in flight); a registration that succeeds gives back the account's only (creating an
account is no attack on it); a reset request keeps both (each may send an e-mail). The buckets
live in this process's memory: each replica counts on its own.
"""

from __future__ import annotations

import hashlib
import math
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from user_service.domain import InvalidInputError, UserError, normalise_email

Clock = Callable[[], float]

SIGN_IN: Final = "sign-in"
REGISTRATION: Final = "registration"
PASSWORD_RESET: Final = "password-reset"

# Past this many buckets the least recently used are forgotten: an attacker spraying addresses
# or accounts gets fresh buckets only after this many others, each of which cost an attempt.
DEFAULT_MAX_BUCKETS: Final = 100_000


class TooManyAttemptsError(UserError):
    """The address or the account has made too many attempts; `retry_after` seconds until the
    next may be made."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"Too many attempts: try again in {self.retry_after_seconds} s.")

    @property
    def retry_after_seconds(self) -> int:
        """Whole seconds, rounded up, at least 1 (a `Retry-After` value)."""
        return max(1, math.ceil(self.retry_after))


@dataclass(frozen=True)
class AttemptLimit:
    """`attempts` at once, given back at `attempts` per `per_seconds`."""

    attempts: int
    per_seconds: float

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.per_seconds <= 0:
            raise ValueError(f"a limit needs at least 1 attempt over a positive time: {self}")

    @property
    def per_second(self) -> float:
        return self.attempts / self.per_seconds


@dataclass
class _Bucket:
    limit: AttemptLimit
    tokens: float
    updated_at: float

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated_at)
        self.tokens = min(float(self.limit.attempts), self.tokens + elapsed * self.limit.per_second)
        self.updated_at = max(self.updated_at, now)


@dataclass(frozen=True)
class Attempt:
    """The buckets one admitted attempt took a token from."""

    address_key: str
    account_key: str | None


def account_key(email: str) -> str:
    """The account an attempt names: the normalised address (or, when it is none, the text as
    typed, trimmed and case-folded), digested so that the buckets hold no addresses."""
    try:
        account = normalise_email(email)
    except InvalidInputError:
        account = unicodedata.normalize("NFKC", email).strip().casefold()
    digest = hashlib.blake2b(account.encode("utf-8", "surrogatepass"), digest_size=16)
    return digest.hexdigest()


class AttemptLimiter:
    """Token buckets per client address and per account, in this process."""

    def __init__(
        self,
        *,
        per_address: AttemptLimit,
        per_account: AttemptLimit,
        clock: Clock = time.monotonic,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
    ) -> None:
        self.per_address = per_address
        self.per_account = per_account
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, *, kind: str, address: str, email: str | None = None) -> Attempt:
        """Take a token from the address's bucket for `kind` of attempt and from the account's
        (both or neither); TooManyAttemptsError when either is empty."""
        now = self._clock()
        charges = [(f"{kind}:{address}", self.per_address)]
        if email is not None:
            # Reset requests count against the account apart: anyone may ask to reset anyone's
            # password, and sharing the sign-in bucket let a stranger's few requests a minute
            # lock the owner out of signing in.
            purpose = PASSWORD_RESET if kind == PASSWORD_RESET else "credentials"
            charges.append((f"account:{purpose}:{account_key(email)}", self.per_account))
        buckets = [self._bucket(key, limit, now) for key, limit in charges]
        empty = [bucket for bucket in buckets if bucket.tokens < 1]
        if empty:
            raise TooManyAttemptsError(
                max((1 - bucket.tokens) / bucket.limit.per_second for bucket in empty)
            )
        for bucket in buckets:
            bucket.tokens -= 1
        return Attempt(charges[0][0], charges[1][0] if len(charges) > 1 else None)

    def give_back(self, attempt: Attempt, *, keep_address: bool = False) -> None:
        """Return the tokens `attempt` took (it succeeded, or was never made); with
        `keep_address`, the account's only."""
        now = self._clock()
        keys = (
            (attempt.account_key,) if keep_address else (attempt.address_key, attempt.account_key)
        )
        for key in filter(None, keys):
            bucket = self._buckets.get(key)
            if bucket is not None:  # forgotten meanwhile: it is full again anyway
                bucket.refill(now)
                bucket.tokens = min(float(bucket.limit.attempts), bucket.tokens + 1)

    def __len__(self) -> int:
        """How many buckets are held."""
        return len(self._buckets)

    def _bucket(self, key: str, limit: AttemptLimit, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(limit, float(limit.attempts), now)
            while len(self._buckets) > self._max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.refill(now)
        return bucket
