"""Token verification (choreo.auth) with keys fetched from a JWKS URL: the keys are kept while the
key server is down, fetched as soon as it is back, and fetched again for a new key, never in a
flood; what a token must say to be an access token; the signing key and its key set."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter
from hypothesis import HealthCheck, given, settings
from jwt.algorithms import RSAAlgorithm

from choreo.auth import (
    AuthError,
    RemoteJwks,
    SigningKey,
    SigningKeysUnavailableError,
    StaticKeys,
    TokenVerifier,
    verifier_from_settings,
)
from choreo.deps import CurrentUser
from choreo.web import create_app
from tests.tokens import Forged, forged_tokens

JWKS_URL = "http://users.test/api/v1/auth/jwks"


@dataclass
class KeyServer:
    """The user service's JWKS endpoint as the verifier sees it: up or down, and counted."""

    keys: list[SigningKey]
    up: bool = True
    answer: Callable[[], httpx.Response] | None = None  # anything else it might say
    delay_seconds: float = 0.0
    hang: asyncio.Event | None = None  # set: it answers nothing until the event is cleared
    fetches: int = 0
    _transport: httpx.MockTransport | None = field(default=None, repr=False)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        await asyncio.sleep(self.delay_seconds)
        while self.hang is not None and self.hang.is_set():
            await asyncio.sleep(0.01)
        if not self.up:
            raise httpx.ConnectError("connection refused", request=request)
        if self.answer is not None:
            return self.answer()
        return httpx.Response(
            200, json={"keys": [k for key in self.keys for k in key.jwks()["keys"]]}
        )

    @property
    def transport(self) -> httpx.MockTransport:
        if self._transport is None:
            self._transport = httpx.MockTransport(self._handle)
        return self._transport


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def verifier_of(server: KeyServer, clock: Clock) -> TokenVerifier:
    return TokenVerifier(
        RemoteJwks(
            JWKS_URL,
            ttl_seconds=300,
            min_refresh_seconds=5,
            retry_seconds=1,
            clock=clock,
            sleep=clock.sleep,
            transport=server.transport,
        )
    )


async def settled() -> None:
    """Let a fetch started in the background finish."""
    for _ in range(10):
        await asyncio.sleep(0)


def token(key: SigningKey) -> str:
    return key.issue(str(uuid.uuid4()))


async def test_tokens_are_verified_with_the_last_keys_while_the_key_server_is_down() -> None:
    key, clock = SigningKey.generate(), Clock()
    server = KeyServer([key])
    verifier = verifier_of(server, clock)
    await verifier.verify(token(key))
    assert server.fetches == 1

    server.up = False
    clock.now += 3600  # long past the keys' time to live
    for _ in range(20):
        await verifier.verify(token(key))
        await settled()
    # One fetch was tried in the background, and failed; the next waits min_refresh_seconds.
    assert server.fetches == 2
    clock.now += 5
    await verifier.verify(token(key))
    await settled()
    assert server.fetches == 3

    # Neither a failing answer nor a key set without keys replaces the keys at hand.
    server.up = True
    for answer in (
        lambda: httpx.Response(500, json={"error": "boom"}),
        lambda: httpx.Response(200, text="<html>not json</html>"),
        lambda: httpx.Response(200, json=["not", "a", "key", "set"]),
        lambda: httpx.Response(200, json={"keys": []}),
        lambda: httpx.Response(200, json={"keys": [{"kid": "x", "kty": "nonsense"}]}),
    ):
        server.answer = answer
        clock.now += 5
        await verifier.verify(token(key))
        await settled()
        assert (await verifier.verify(token(key))).user_id


async def test_a_waiting_request_does_not_wait_for_a_refresh_in_the_background() -> None:
    key, clock = SigningKey.generate(), Clock()
    server = KeyServer([key])
    verifier = verifier_of(server, clock)
    await verifier.verify(token(key))
    server.hang = asyncio.Event()
    server.hang.set()
    clock.now += 3600
    async with asyncio.timeout(1):
        for _ in range(5):
            await verifier.verify(token(key))
            await settled()
    assert server.fetches == 2  # the one refresh, still under way
    server.hang.clear()


async def test_without_keys_tokens_wait_and_the_keys_arrive_once_the_server_is_back() -> None:
    key, clock = SigningKey.generate(), Clock()
    server = KeyServer([key], up=False)
    verifier = verifier_of(server, clock)
    started = clock.now
    for _ in range(20):
        with pytest.raises(SigningKeysUnavailableError) as unavailable:
            await verifier.verify(token(key))
        assert unavailable.value.retriable
        assert 0 < unavailable.value.retry_after <= 1
    # Each request waited for the next try rather than fail on the last one's answer; the
    # tries stayed one a second (retry_seconds).
    assert server.fetches == 20
    assert clock.now - started == pytest.approx(19.0)
    assert "signing keys unavailable: ConnectError" in str(unavailable.value)

    # Right after the key server comes up, a request never fails on an answer from before.
    server.up = True
    assert (await verifier.verify(token(key))).user_id
    assert server.fetches == 21


class EarlyClock(Clock):
    """A sleep that ends a millisecond early, as uvloop's millisecond timers may."""

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds - 0.001)


async def test_a_request_that_waited_for_the_next_try_gets_it_even_if_woken_early() -> None:
    key, clock = SigningKey.generate(), EarlyClock()
    server = KeyServer([key], up=False)
    verifier = verifier_of(server, clock)
    with pytest.raises(SigningKeysUnavailableError):
        await verifier.verify(token(key))  # the gateway's readiness probe, say
    server.up = True
    clock.now += 0.5
    # It waits out the rest of the second, then fetches: never the answer from before.
    assert (await verifier.verify(token(key))).user_id
    assert server.fetches == 2


async def test_requests_waiting_for_keys_share_one_fetch() -> None:
    key, clock = SigningKey.generate(), Clock()
    server = KeyServer([key], delay_seconds=0.05)
    verifier = verifier_of(server, clock)
    principals = await asyncio.gather(*(verifier.verify(token(key)) for _ in range(50)))
    assert len(principals) == 50
    assert server.fetches == 1


async def test_a_new_signing_key_is_fetched_at_most_every_few_seconds() -> None:
    old, new, forged = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    clock = Clock()
    server = KeyServer([old])
    verifier = verifier_of(server, clock)
    await verifier.verify(token(old))

    server.keys = [old, new]  # the user service rotated its key
    clock.now += 5
    assert (await verifier.verify(token(new))).user_id
    assert server.fetches == 2
    # Unknown keys do not make the verifier hammer the key server.
    for _ in range(20):
        with pytest.raises(AuthError, match="unknown key") as refused:
            await verifier.verify(token(forged))
        assert not refused.value.retriable
    assert server.fetches == 2
    clock.now += 5
    with pytest.raises(AuthError, match="unknown key"):
        await verifier.verify(token(forged))
    assert server.fetches == 3

    # Down: a token of a key not fetched yet cannot be judged, so it is "try again", not 401;
    # tokens of the keys at hand still pass.
    server.up = False
    clock.now += 5
    with pytest.raises(SigningKeysUnavailableError):
        await verifier.verify(token(forged))
    assert (await verifier.verify(token(old))).user_id


async def test_a_service_answers_503_with_retry_after_while_it_has_no_keys() -> None:
    key, clock = SigningKey.generate(), Clock()
    server = KeyServer([key], up=False)
    router = APIRouter()

    @router.get("/me")
    async def me(user: CurrentUser) -> dict[str, str]:
        return {"id": user.user_id}

    app = create_app("test_service", routers=[router])
    app.state.token_verifier = verifier_of(server, clock)
    headers = {"Authorization": f"Bearer {token(key)}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        unavailable = await client.get("/me", headers=headers)
        assert unavailable.status_code == 503
        assert unavailable.headers["retry-after"] == "1"
        assert unavailable.json()["error"]["code"] == "auth_unavailable"
        assert "www-authenticate" not in unavailable.headers  # the token is not at fault

        server.up = True
        clock.now += 1
        assert (await client.get("/me", headers=headers)).status_code == 200
        refused = await client.get("/me", headers={"Authorization": "Bearer not.a.jwt"})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"


def _app_verifying_with(key: SigningKey) -> httpx.AsyncClient:
    router = APIRouter()

    @router.get("/me")
    async def me(user: CurrentUser) -> dict[str, object]:
        return {"id": user.user_id, "roles": sorted(user.roles)}

    app = create_app("test_service", routers=[router])
    app.state.token_verifier = TokenVerifier(StaticKeys(key.jwks()))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


REAL_KEY, STRANGER_KEY, SUBJECT = SigningKey.generate(), SigningKey.generate(), str(uuid.uuid4())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(forged=forged_tokens(REAL_KEY.kid, SUBJECT))
async def test_any_token_shape_is_401_or_names_its_subject(forged: Forged) -> None:
    # Found by a security review: an RS256 header naming the EdDSA key was a 500 (TypeError
    # in jwt.decode), so were `"roles": 5` and a subject with a NUL byte.
    token = forged.token(REAL_KEY, STRANGER_KEY)
    async with _app_verifying_with(REAL_KEY) as client:
        answer = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code in (200, 401), answer.text
    if answer.status_code == 200:
        assert forged.signer == "real"
        assert forged.header["alg"] == "EdDSA"
        assert answer.json()["id"] == SUBJECT
        assert set(answer.json()["roles"]) <= {"user", "admin"}


@pytest.mark.parametrize(
    ("header", "claims"),
    [
        ({"alg": "RS256"}, {}),  # the algorithm of another key type
        ({}, {"roles": 5}),
        ({}, {"roles": ["root"]}),
        ({}, {"sub": f"{SUBJECT}\x00"}),
        ({}, {"sub": "not-a-user-id"}),
        ({}, {"sub": SUBJECT.replace("-", "")}),  # a UUID, not in its canonical form
        ({}, {"email": ["ada@example.com"]}),
        ({}, {"sid": "not-a-session"}),
        ({}, {"sid": 5}),
        ({}, {"sid": str(uuid.uuid4()).replace("-", "")}),  # not in its canonical form
    ],
)
async def test_the_reviewed_token_shapes_are_401(
    header: dict[str, object], claims: dict[str, object]
) -> None:
    now = int(time.time())
    valid_claims = {
        "sub": SUBJECT,
        "roles": ["user"],
        "iss": "choreo",
        "aud": "choreo",
        "iat": now,
        "exp": now + 600,
    }
    valid = Forged({"alg": "EdDSA", "kid": REAL_KEY.kid}, valid_claims, "real")
    forged = Forged(valid.header | header, valid_claims | claims, "real")
    async with _app_verifying_with(REAL_KEY) as client:
        answers = [
            await client.get("/me", headers={"Authorization": f"Bearer {token}"})
            for token in (t.token(REAL_KEY, STRANGER_KEY) for t in (valid, forged))
        ]
    assert [answer.status_code for answer in answers] == [200, 401]
    assert answers[1].json()["error"]["code"] == "unauthenticated"


async def test_a_token_names_its_session_and_one_without_a_session_names_none() -> None:
    key, user, session = SigningKey.generate(), str(uuid.uuid4()), str(uuid.uuid4())
    verifier = TokenVerifier(StaticKeys(key.jwks()))
    principal = await verifier.verify(key.issue(user, session_id=session))
    assert (principal.user_id, principal.session_id) == (user, session)
    upper = await verifier.verify(key.issue(user, session_id=session.upper()))
    assert upper.session_id == session
    assert (await verifier.verify(key.issue(user))).session_id is None


# --- the token's own claims, and the keys ------------------------------------------------------


@pytest.mark.parametrize(
    ("issued", "said"),
    [
        ({"ttl_seconds": -60}, "invalid token: Signature has expired"),
        ({"token_type": "refresh"}, "not an access token"),
    ],
)
async def test_an_expired_token_or_a_refresh_token_is_no_access_token(
    issued: dict[str, Any], said: str
) -> None:
    key = SigningKey.generate()
    verifier = TokenVerifier(StaticKeys(key.jwks()))

    with pytest.raises(AuthError, match=said):
        await verifier.verify(key.issue(str(uuid.uuid4()), **issued))


async def test_a_token_for_another_issuer_or_audience_is_refused() -> None:
    key = SigningKey.generate()
    token = key.issue(str(uuid.uuid4()))

    for verifier, said in [
        (TokenVerifier(StaticKeys(key.jwks()), issuer="elsewhere"), "Invalid issuer"),
        (TokenVerifier(StaticKeys(key.jwks()), audience="elsewhere"), "Audience doesn't match"),
    ]:
        with pytest.raises(AuthError, match=said):
            await verifier.verify(token)


async def test_a_token_says_who_calls_with_which_roles_and_address() -> None:
    key, user = SigningKey.generate(), str(uuid.uuid4())
    verifier = TokenVerifier(StaticKeys(key.jwks()))

    admin = await verifier.verify(key.issue(user, roles=["user", "admin"], email="a@example.com"))
    customer = await verifier.verify(key.issue(user))

    assert (admin.user_id, admin.roles, admin.email) == (user, {"admin", "user"}, "a@example.com")
    assert (admin.is_admin, customer.is_admin, customer.email) == (True, False, None)


async def test_a_token_of_an_rs256_key_in_the_key_set_is_accepted() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    jwks = {"keys": [{**public, "kid": "rsa-1", "alg": "RS256", "use": "sig"}]}
    now, user = int(time.time()), str(uuid.uuid4())
    claims = {"sub": user, "iss": "choreo", "aud": "choreo", "iat": now, "exp": now + 60}
    token = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "rsa-1"})

    assert (await TokenVerifier(StaticKeys(jwks)).verify(token)).user_id == user


async def test_a_signing_key_survives_its_pem_and_publishes_only_its_public_half() -> None:
    key = SigningKey.generate()
    again = SigningKey.from_pem(key.to_pem(), key.kid)
    user = str(uuid.uuid4())

    verified = await TokenVerifier(StaticKeys(key.jwks())).verify(again.issue(user))

    assert verified.user_id == user
    [published] = key.jwks()["keys"]
    assert published.keys() == {"kty", "crv", "x", "kid", "alg", "use"}
    assert (published["kid"], published["alg"], published["use"]) == (key.kid, "EdDSA", "sig")


def test_a_signing_key_that_is_not_ed25519_is_refused() -> None:
    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )

    with pytest.raises(AuthError, match="must be an Ed25519 private key"):
        SigningKey.from_pem(pem, "rsa")


async def test_the_settings_name_the_keys_a_service_verifies_with() -> None:
    key, user = SigningKey.generate(), str(uuid.uuid4())

    given_keys = verifier_from_settings(JWKS_URL, json.dumps(key.jwks()))
    fetched = verifier_from_settings(JWKS_URL, None)

    assert given_keys is not None
    # Given keys win over the URL: nothing is fetched (users.test does not resolve).
    assert (await given_keys.verify(key.issue(user))).user_id == user
    assert fetched is not None
    assert isinstance(fetched._source, RemoteJwks)
    assert verifier_from_settings(None, None) is None
    assert verifier_from_settings("", "") is None


async def test_a_key_server_not_up_yet_is_not_warned_about_until_it_stays_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key, clock = SigningKey.generate(), Clock()
    server = KeyServer([key])
    server.up = False
    verifier = verifier_of(server, clock)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

    # Start-up: the gateway asks before the user service listens, then it comes up.
    with caplog.at_level(logging.DEBUG, logger="choreo.auth"):
        for _ in range(3):
            with pytest.raises(SigningKeysUnavailableError):
                await verifier.verify(token(key))
        server.up = True
        await verifier.verify(token(key))
    assert warnings() == []

    # An outage after that is warned about once, however many fetches fail.
    server.up = False
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="choreo.auth"):
        for _ in range(4):
            clock.now += 3600
            await verifier.verify(token(key))
            await settled()
    assert len(warnings()) == 1
    assert "keeping the 1 fetched before" in warnings()[0]

    # A key server that never comes up is warned about once the start-up grace is over.
    never = verifier_of(_down(key), clock)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="choreo.auth"):
        for _ in range(20):
            with pytest.raises(SigningKeysUnavailableError):
                await never.verify(token(key))
    assert len(warnings()) == 1
    assert "none yet" in warnings()[0]


def _down(key: SigningKey) -> KeyServer:
    server = KeyServer([key])
    server.up = False
    return server
