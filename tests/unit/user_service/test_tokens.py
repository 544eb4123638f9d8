"""What a login hands out: access tokens the other services' verifier accepts, with the
account's id, roles, e-mail and session, and refresh tokens of which only a digest is kept."""

from __future__ import annotations

import jwt
import pytest

from choreo.auth import AuthError, SigningKey, StaticKeys, TokenVerifier
from user_service.domain import Role
from user_service.tokens import TokenIssuer, new_refresh_secret, refresh_digest

USER_ID = "6f1c2b5e-3d5f-4a51-9a0e-2f4b1d9c8e7a"
SESSION_ID = "0b9d7c1e-5a4f-4e2b-8c3d-1f2e3d4c5b6a"


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def issuer(key: SigningKey) -> TokenIssuer:
    return TokenIssuer(key, access_ttl_seconds=900, refresh_ttl_seconds=3600)


@pytest.mark.parametrize(
    ("role", "roles"), [(Role.CUSTOMER, {"user"}), (Role.ADMIN, {"admin", "user"})]
)
async def test_access_tokens_carry_the_account_and_pass_the_shared_verifier(
    key: SigningKey, issuer: TokenIssuer, role: Role, roles: set[str]
) -> None:
    token = issuer.access_token(USER_ID, role, "ada@example.com", SESSION_ID)
    principal = await TokenVerifier(StaticKeys(key.jwks())).verify(token)
    assert principal.user_id == USER_ID
    assert principal.session_id == SESSION_ID
    assert principal.roles == roles
    assert principal.email == "ada@example.com"
    assert principal.is_admin == (role is Role.ADMIN)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["iss"], claims["aud"], claims["typ"]) == ("choreo", "choreo", "access")
    assert claims["exp"] - claims["iat"] == 900
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": key.kid, "typ": "JWT"}


async def test_tokens_of_another_key_are_refused(issuer: TokenIssuer) -> None:
    token = issuer.access_token(USER_ID, Role.ADMIN, "ada@example.com", SESSION_ID)
    stranger = SigningKey.generate()
    with pytest.raises(AuthError):
        await TokenVerifier(StaticKeys(stranger.jwks())).verify(token)


def test_a_pair_says_when_its_access_token_expires(issuer: TokenIssuer) -> None:
    secret = new_refresh_secret()
    pair = issuer.pair(USER_ID, Role.CUSTOMER, "ada@example.com", secret, SESSION_ID)
    assert pair.expires_in == 900
    assert jwt.decode(pair.access_token, options={"verify_signature": False})["sid"] == SESSION_ID
    assert pair.refresh_token == secret.token
    assert issuer.refresh_ttl.total_seconds() == 3600


def test_refresh_tokens_are_random_and_only_their_digest_is_kept() -> None:
    secrets = [new_refresh_secret() for _ in range(100)]
    assert len({s.token for s in secrets}) == 100
    for secret in secrets[:5]:
        assert len(secret.token) >= 43  # 256 bits, URL-safe base64
        assert secret.digest == refresh_digest(secret.token)
        assert len(secret.digest) == 32
        assert secret.token.encode() not in secret.digest
    # Whatever a client sends can be digested (and matches nothing).
    assert len(refresh_digest("not\ud800text")) == 32
