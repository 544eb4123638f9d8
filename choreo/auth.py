"""JWT issuing and verification shared by the user service, the gateway and every service.

Tokens are signed with an asymmetric key (EdDSA / Ed25519 by default, RS256 accepted); the
public keys travel as a JWKS. A service verifies every request itself, so a call that bypasses
the gateway is still authenticated.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from choreo.errors import ChoreoError, RetriableError

ALGORITHMS = ("EdDSA", "RS256")
ISSUER = "choreo"
AUDIENCE = "choreo"
ROLES = frozenset({"user", "admin"})
"""The roles a token may carry; one naming any other is refused."""

log = logging.getLogger(__name__)


class AuthError(ChoreoError):
    """The request carries no valid token."""


class SigningKeysUnavailableError(AuthError, RetriableError):
    """There are no keys to check the token with right now (the key server cannot be reached
    and none were fetched before it went away): ask again after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject and roles, and the session the token was issued
    for (its `sid` claim, as in OpenID Connect), which a logout or a password change ends."""

    user_id: str
    roles: frozenset[str] = frozenset()
    email: str | None = None
    session_id: str | None = None
    expires_at: datetime | None = None  # the token's `exp`: a long-lived response ends then

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class KeySource(Protocol):
    async def keys(self, *, refresh: bool) -> Mapping[str, jwt.PyJWK]: ...


@dataclass
class StaticKeys:
    """Keys given up front (a JWKS document from the environment, or a test's own)."""

    jwks: Mapping[str, Any]
    _parsed: dict[str, jwt.PyJWK] = field(default_factory=dict)

    async def keys(self, *, refresh: bool) -> Mapping[str, jwt.PyJWK]:
        if not self._parsed:
            self._parsed = _parse_jwks(self.jwks)
        return self._parsed


class RemoteJwks:
    """A JWKS URL (the user service's /auth/jwks), fetched once and kept.

    Fetched again when the keys are older than `ttl_seconds` (in the background: tokens are
    verified with the keys at hand meanwhile), and for a token whose `kid` is not among them (a
    new signing key), at most once every `min_refresh_seconds`. A fetch that fails keeps the
    keys fetched last, so tokens are still verified while the key server is down. Until a
    first fetch succeeds there is nothing to verify with: a fetch is tried at most once every
    `retry_seconds`, and a request that needs keys waits for the next try (at most
    `retry_seconds`) instead of failing on the last one's stale answer, so the keys arrive
    that soon after the key server is back. One fetch at a time, whatever the number of
    requests waiting for it. A failing key server is warned about once per outage; before the
    first keys, only once it has failed for `startup_grace_seconds` (start-up order).
    """

    def __init__(
        self,
        url: str,
        *,
        ttl_seconds: float = 300.0,
        min_refresh_seconds: float = 5.0,
        retry_seconds: float = 1.0,
        timeout_seconds: float = 3.0,
        startup_grace_seconds: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = url
        self._ttl = ttl_seconds
        self._min_refresh = min_refresh_seconds
        self._retry = retry_seconds
        self._timeout = timeout_seconds
        self._clock = clock
        self._sleep = sleep
        self._transport = transport
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._failure: str | None = None  # why the last fetch failed; None once one succeeds
        self._startup_grace = startup_grace_seconds
        self._failing_since: float | None = None  # when the current run of failures began
        self._warned = False  # whether this run of failures has been warned about
        self._fetching: asyncio.Task[None] | None = None

    async def keys(self, *, refresh: bool) -> Mapping[str, jwt.PyJWK]:
        """The keys at hand. With `refresh` (a token names a key that is not among them), they
        are fetched again first, unless the last fetch was less than `min_refresh_seconds` ago.

        Raises `SigningKeysUnavailableError` when there are no keys, or when fresher ones are
        wanted and the last fetch failed.
        """
        if self._keys and not refresh:
            if self._clock() - self._fetched_at > self._ttl and self._due():
                self._start_fetch()
            return self._keys
        waited_after: float | None = None
        if not self._keys and self._fetching is None and not self._due():
            # Nothing to verify with, and the last try was under `retry_seconds` ago: wait for
            # the next one rather than fail on its stale answer (right after start-up, that
            # answer predates the key server being up).
            waited_after = self._attempted_at
            await self._sleep(self._next_attempt_in())
        # A timer may end a little early (uvloop's count milliseconds): after waiting, the
        # next try is due unless another request has made it meanwhile.
        next_try_due = self._due() or (
            waited_after is not None and self._attempted_at == waited_after
        )
        if self._fetching is None and next_try_due:
            self._start_fetch()
        if self._fetching is not None:
            # Shielded: a request that goes away does not cancel the fetch others wait for.
            await asyncio.shield(self._fetching)
        if not self._keys or (refresh and self._failure is not None):
            raise SigningKeysUnavailableError(
                f"signing keys unavailable: {self._failure or 'not fetched yet'}",
                retry_after=self._next_attempt_in(),
            )
        return self._keys

    def _interval(self) -> float:
        return self._min_refresh if self._keys else self._retry

    def _due(self) -> bool:
        return self._next_attempt_in() <= 0

    def _next_attempt_in(self) -> float:
        return max(0.0, self._attempted_at + self._interval() - self._clock())

    def _start_fetch(self) -> None:
        self._attempted_at = self._clock()
        self._fetching = asyncio.create_task(self._fetch(), name=f"fetch {self._url}")

    async def _fetch(self) -> None:
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport
            ) as client:
                response = await client.get(self._url)
                response.raise_for_status()
            keys = _parse_jwks(response.json())
            if not keys:
                raise ValueError("the key set holds no key with a kid")
        except Exception as error:  # whatever the key server did, the keys at hand are kept
            self._note_failure(error)
        else:
            if self._warned:
                log.info("signing keys fetched from %s again", self._url)
            self._keys, self._fetched_at, self._failure = keys, self._clock(), None
            self._failing_since, self._warned = None, False
        finally:
            self._fetching = None

    def _note_failure(self, error: Exception) -> None:
        """Warn once per outage. Before the first keys, for `startup_grace_seconds`, a failure
        is only noted at DEBUG: at start-up the verifier is often asked before the key server
        listens (the gateway's readiness probe runs before the user service is up)."""
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        self._failure = f"{type(error).__name__}: {error}"[:200]
        starting = not self._keys and now - self._failing_since < self._startup_grace
        if self._warned or starting:
            log.debug("signing keys not fetched from %s yet: %s", self._url, self._failure)
            return
        self._warned = True
        log.warning(
            "cannot fetch the signing keys from %s (%r); %s",
            self._url,
            error,
            f"keeping the {len(self._keys)} fetched before" if self._keys else "none yet",
        )


def _parse_jwks(jwks: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
    return {key["kid"]: jwt.PyJWK(key) for key in jwks.get("keys", []) if "kid" in key}


class TokenVerifier:
    """Checks signature, algorithm, expiry, issuer and audience; returns the principal."""

    def __init__(self, source: KeySource, *, issuer: str = ISSUER, audience: str = AUDIENCE):
        self._source = source
        self._issuer = issuer
        self._audience = audience

    async def check_keys(self) -> None:
        """Returns when there are keys to verify tokens with (fetching them if there are none
        yet); raises `SigningKeysUnavailableError` otherwise."""
        await self._source.keys(refresh=False)

    async def verify(self, token: str) -> Principal:
        """The principal of a valid access token.

        Raises `AuthError` for any token that is not one, whatever its shape: the algorithm
        must be one of `ALGORITHMS` and the one its key is for (RFC 8725 §3.1: a token may not
        pick how its key is used), and the claims must have their types (`sub` a UUID, `roles`
        a list of `ROLES`, `email` a string, `sid` a UUID when present). Raises
        `SigningKeysUnavailableError` when there are no keys to check it with.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise AuthError(f"malformed token: {error}") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
            raise AuthError(f"token algorithm {str(algorithm)[:20]!r} is not accepted")
        if not isinstance(kid, str):
            raise AuthError("token names no signing key (kid)")
        keys = await self._source.keys(refresh=False)
        if kid not in keys:
            keys = await self._source.keys(refresh=True)
        key = keys.get(kid)
        if key is None:
            raise AuthError("token signed by an unknown key")
        if key.algorithm_name != algorithm:
            raise AuthError(f"token algorithm {algorithm} is not its key's ({key.algorithm_name})")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub"]},
                leeway=5,
            )
        except jwt.PyJWTError as error:
            raise AuthError(f"invalid token: {error}") from None
        return _principal(claims)


def _principal(claims: Mapping[str, Any]) -> Principal:
    """The principal the verified claims name; `AuthError` when a claim has the wrong type."""
    if claims.get("typ", "access") != "access":
        raise AuthError("not an access token")
    subject, roles, email = claims["sub"], claims.get("roles", []), claims.get("email")
    user_id = _canonical_uuid(subject)
    if user_id is None:
        raise AuthError("the token's subject is not a user id")
    session = claims.get("sid")
    session_id = None if session is None else _canonical_uuid(session)
    if session is not None and session_id is None:
        raise AuthError("the token's session (sid) is not a session id")
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise AuthError("the token's roles are not a list of names")
    if not ROLES.issuperset(roles):
        raise AuthError("the token names a role that does not exist")
    if email is not None and not isinstance(email, str):
        raise AuthError("the token's email is not a string")
    expires = claims.get("exp")
    return Principal(
        user_id=user_id,
        roles=frozenset(roles),
        email=email,
        session_id=session_id,
        expires_at=datetime.fromtimestamp(expires, UTC) if isinstance(expires, int) else None,
    )


def _canonical_uuid(value: object) -> str | None:
    """`value` as a UUID's canonical text, or None unless it is a UUID in that form (any case)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = str(uuid.UUID(value))
    except ValueError:
        return None
    return parsed if parsed == value.lower() else None


@dataclass(frozen=True)
class SigningKey:
    """A private Ed25519 key and its id; `jwks()` is what verifiers need."""

    kid: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(kid=uuid.uuid4().hex[:16], private_key=Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: str, kid: str) -> SigningKey:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise AuthError("the signing key must be an Ed25519 private key (PEM, PKCS#8)")
        return cls(kid=kid, private_key=key)

    def to_pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def jwks(self) -> dict[str, Any]:
        public = json.loads(OKPAlgorithm.to_jwk(self.private_key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "alg": "EdDSA", "use": "sig"}]}

    def issue(
        self,
        user_id: str,
        *,
        roles: Iterable[str] = ("user",),
        email: str | None = None,
        ttl_seconds: int = 900,
        token_type: str = "access",
        session_id: str | None = None,
    ) -> str:
        """A signed token; `session_id` becomes its `sid` claim (the session it belongs to)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": user_id,
            "roles": sorted(roles),
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + ttl_seconds,
            "jti": uuid.uuid4().hex,
            "typ": token_type,
        }
        if email is not None:
            claims["email"] = email
        if session_id is not None:
            claims["sid"] = session_id
        return jwt.encode(claims, self.private_key, algorithm="EdDSA", headers={"kid": self.kid})


def verifier_from_settings(jwks_url: str | None, jwks_json: str | None) -> TokenVerifier | None:
    """The verifier a service's settings describe, or None when they name no keys."""
    if jwks_json:
        return TokenVerifier(StaticKeys(json.loads(jwks_json)))
    if jwks_url:
        return TokenVerifier(RemoteJwks(jwks_url))
    return None
