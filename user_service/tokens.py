"""The tokens a login hands out: a short-lived signed access token (a JWT the other services
verify) and a long-lived opaque refresh token, of which the service keeps only a digest."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from choreo.auth import SigningKey
from user_service.domain import Role, token_roles

# 256 random bits: guessing is hopeless, so a fast digest is enough to store it (unlike a
# password, it needs no slow hash).
_REFRESH_TOKEN_BYTES = 32


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str


@dataclass(frozen=True, slots=True)
class RefreshSecret:
    """A new refresh token: the secret goes to the client, the digest to the database."""

    token: str
    digest: bytes


def refresh_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def new_refresh_secret() -> RefreshSecret:
    token = secrets.token_urlsafe(_REFRESH_TOKEN_BYTES)
    return RefreshSecret(token, refresh_digest(token))


class TokenIssuer:
    """Signs access tokens with the service's key, for the configured lifetimes."""

    def __init__(
        self, signing_key: SigningKey, *, access_ttl_seconds: int, refresh_ttl_seconds: int
    ) -> None:
        self.signing_key = signing_key
        self.access_ttl_seconds = access_ttl_seconds
        self.refresh_ttl = timedelta(seconds=refresh_ttl_seconds)

    @property
    def access_ttl(self) -> timedelta:
        return timedelta(seconds=self.access_ttl_seconds)

    def access_token(self, user_id: str, role: Role, email: str, session_id: str) -> str:
        """An access token of the session `session_id` (its `sid` claim: the refresh-token
        family), which ends with the session (choreo.revocations)."""
        return self.signing_key.issue(
            user_id,
            roles=token_roles(role),
            email=email,
            ttl_seconds=self.access_ttl_seconds,
            session_id=session_id,
        )

    def pair(
        self, user_id: str, role: Role, email: str, refresh: RefreshSecret, session_id: str
    ) -> TokenPair:
        return TokenPair(
            access_token=self.access_token(user_id, role, email, session_id),
            expires_in=self.access_ttl_seconds,
            refresh_token=refresh.token,
        )
