"""Tokens of every shape, as an attacker writes them: hypothesis strategies for JWT headers and
claims, signed with the real key, another key, or nothing (RFC 7515 compact serialization)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from choreo.auth import SigningKey

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Forged:
    """A token's parts before it is written out; `signer` None means a garbage signature."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signer: str  # "real", "stranger" or "garbage"

    def token(self, real: SigningKey, stranger: SigningKey) -> str:
        header = _b64(json.dumps(self.header).encode())
        payload = _b64(json.dumps(self.claims).encode())
        signing_input = f"{header}.{payload}".encode()
        if self.signer == "garbage":
            signature = b"\x00" * 64
        else:
            key = real if self.signer == "real" else stranger
            signature = key.private_key.sign(signing_input)
        return f"{header}.{payload}.{_b64(signature)}"


def forged_tokens(real_kid: str, subject: str) -> st.SearchStrategy[Forged]:
    """Tokens around a valid one: each header member and claim either right, wrong in type or
    value, or missing; signed with the real key, a stranger's or not at all."""
    now = int(time.time())

    def member(right: Any, *wrong: Any) -> st.SearchStrategy[Any]:
        return st.sampled_from([right, *wrong]) | json_values

    header = st.fixed_dictionaries(
        {},
        optional={
            "alg": member("EdDSA", "RS256", "HS256", "none", "ES256", "PS256"),
            "kid": member(real_kid, "no-such-key", ""),
            "typ": member("JWT"),
            "jku": member("http://evil.example/jwks"),
            "crit": member(["exp"]),
        },
    )
    claims = st.fixed_dictionaries(
        {},
        optional={
            "sub": member(subject, str(uuid.uuid4()), f"{subject}\x00", "admin", 5, ""),
            "roles": member(["user"], ["admin", "user"], 5, "admin", ["root"], [5], None),
            "iss": member("choreo", "someone-else"),
            "aud": member("choreo", ["choreo"], "elsewhere"),
            "iat": member(now, "yesterday"),
            "exp": member(now + 600, now - 600, "tomorrow", 1e300),
            "typ": member("access", "refresh", 7),
            "email": member("ada@example.com", 5, ["a@b"]),
            "sid": member(str(uuid.uuid4()), "not-a-session", str(uuid.uuid4()).upper(), 5, ""),
        },
    )
    signer = st.sampled_from(["real", "stranger", "garbage"])
    return st.builds(Forged, header=header, claims=claims, signer=signer)
