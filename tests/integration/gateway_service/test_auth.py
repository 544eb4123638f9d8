"""Authentication at the edge: public routes pass, everything else needs a valid bearer token."""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from choreo.auth import AUDIENCE, ISSUER, SigningKey

from .conftest import Front

PUBLIC = [
    ("POST", "/api/v1/auth/register", "user"),
    ("POST", "/api/v1/auth/login", "user"),
    ("POST", "/api/v1/auth/refresh", "user"),
    ("GET", "/api/v1/auth/jwks", "user"),
    ("GET", "/api/v1/products", "inventory"),
    ("GET", "/api/v1/products/p-1", "inventory"),
    ("POST", "/api/v1/products/lookup", "inventory"),
]
PROTECTED = [
    ("GET", "/api/v1/users/me", "user"),
    ("POST", "/api/v1/products", "inventory"),
    ("DELETE", "/api/v1/products/p-1", "inventory"),
    ("POST", "/api/v1/orders", "order"),
    ("GET", "/api/v1/payments", "payment"),
    ("GET", "/api/v1/notifications", "notification"),
]


def _segment(value: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def unsigned_token(kid: str, user_id: str) -> str:
    """A token with `alg: none` and no signature, made by hand (PyJWT refuses to)."""
    now = int(time.time())
    claims = {
        "sub": user_id,
        "roles": ["admin", "user"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
        "typ": "access",
    }
    return f"{_segment({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_segment(claims)}."


async def test_only_public_routes_pass_without_a_valid_token(
    front: Front, signing_key: SigningKey
) -> None:
    # The gateway fetches the keys from the user service, as in production.
    gateway, upstreams = front.gateway, front.upstreams
    user_id = str(uuid.uuid4())
    stranger = SigningKey.generate()
    impostor = SigningKey(kid=signing_key.kid, private_key=Ed25519PrivateKey.generate())
    invalid = {
        "no token": {},
        "not a bearer token": {"Authorization": "Basic dXNlcjpwYXNz"},
        "garbage": {"Authorization": "Bearer not.a.jwt"},
        "another key": {"Authorization": f"Bearer {stranger.issue(user_id)}"},
        "the same kid, another key": {"Authorization": f"Bearer {impostor.issue(user_id)}"},
        "expired": {"Authorization": f"Bearer {signing_key.issue(user_id, ttl_seconds=-60)}"},
        "alg none": {"Authorization": f"Bearer {unsigned_token(signing_key.kid, user_id)}"},
        "a refresh token": {
            "Authorization": f"Bearer {signing_key.issue(user_id, token_type='refresh')}"
        },
        "HS256 with the public key as secret": {
            "Authorization": "Bearer "
            + jwt.encode(
                {"sub": user_id, "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60},
                "x" * 32,
                algorithm="HS256",
                headers={"kid": signing_key.kid},
            )
        },
    }
    async with gateway.client() as api:
        for method, path, service in PROTECTED:
            hits = upstreams[service].hits(path)
            for why, headers in invalid.items():
                response = await api.request(method, path, headers=headers, json={})
                assert response.status_code == 401, (method, path, why, response.text)
                assert response.json()["error"]["code"] == "unauthenticated"
                assert response.headers["www-authenticate"] == "Bearer"
            assert upstreams[service].hits(path) == hits, f"{path} reached {service}"

        for method, path, service in PUBLIC:
            response = await api.request(method, path, json={})
            assert response.status_code == 200, (method, path, response.text)
            assert upstreams[service].seen[-1].path == path
            # A bad token does not close a public route: the service reads it (or ignores it).
            response = await api.request(method, path, headers=invalid["expired"], json={})
            assert response.status_code == 200, (method, path, response.text)
            assert upstreams[service].seen[-1].headers["authorization"].startswith("Bearer ")

        token = signing_key.issue(user_id, roles=["user"])
        for method, path, service in PROTECTED:
            response = await api.request(
                method, path, headers={"Authorization": f"Bearer {token}"}, json={}
            )
            assert response.status_code == 200, (method, path, response.text)
            assert upstreams[service].seen[-1].headers["authorization"] == f"Bearer {token}"
    # The keys came from the user service's JWKS, fetched by the gateway itself (not a proxied
    # request) and cached rather than fetched per request.
    fetches = [
        seen
        for seen in upstreams["user"].seen
        if seen.path == "/api/v1/auth/jwks" and "x-forwarded-for" not in seen.headers
    ]
    assert 1 <= len(fetches) <= 2
