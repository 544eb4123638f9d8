"""The signing key from the environment or from a key file: dev and test generate the file once
(readable by its owner only) and keep using it; production never generates one. The
notification service's public key, which reset tokens are sealed to: required in production."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from choreo.auth import SigningKey, StaticKeys, TokenVerifier
from choreo.sealing import Opener
from choreo.service import ConfigurationError
from user_service.config import Settings
from user_service.keys import SigningKeyError, load_notification_key, load_signing_key


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CHOREO_ENV",
        "USER_JWT_PRIVATE_KEY",
        "USER_JWT_KEY_ID",
        "USER_JWT_KEY_FILE",
        "CHOREO_NOTIFICATION_KEY",
    ):
        monkeypatch.delenv(name, raising=False)


def settings(env: str, **values: object) -> Settings:
    given: dict[str, Any] = {
        "CHOREO_ENV": env,
        "database_url": "postgresql://127.0.0.1/users",
        **values,
    }
    return Settings(**given)


def raw_public_key(key: SigningKey) -> bytes:
    return key.private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


@pytest.mark.parametrize("env", ["dev", "test"])
async def test_a_missing_key_file_is_generated_once_and_kept(tmp_path: Path, env: str) -> None:
    path = tmp_path / "data" / "jwt-signing-key.pem"
    first = load_signing_key(settings(env=env, jwt_key_file=path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert first.kid == hashlib.sha256(raw_public_key(first)).hexdigest()[:16]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left

    again = load_signing_key(settings(env=env, jwt_key_file=path))
    assert again.kid == first.kid
    assert again.jwks() == first.jwks()
    token = first.issue("6f1c2b5e-3d5f-4a51-9a0e-2f4b1d9c8e7a")
    assert (await TokenVerifier(StaticKeys(again.jwks())).verify(token)).user_id.startswith("6f1c")


def test_production_uses_an_existing_key_file_and_never_generates_one(tmp_path: Path) -> None:
    path = tmp_path / "jwt-signing-key.pem"
    with pytest.raises(SigningKeyError, match="does not exist"):
        load_signing_key(settings(env="prod", jwt_key_file=path))
    assert not path.exists()
    key = SigningKey.generate()
    path.write_text(key.to_pem())
    loaded = load_signing_key(settings(env="prod", jwt_key_file=path, jwt_key_id="k-2026"))
    assert (loaded.kid, loaded.jwks()["keys"][0]["x"]) == ("k-2026", key.jwks()["keys"][0]["x"])


def test_a_key_given_in_the_environment_wins(tmp_path: Path) -> None:
    key = SigningKey.generate()
    given = settings(
        env="prod",
        jwt_private_key=key.to_pem(),
        jwt_key_id=key.kid,
        jwt_key_file=tmp_path / "unused.pem",
    )
    assert load_signing_key(given).jwks() == key.jwks()
    assert not (tmp_path / "unused.pem").exists()
    derived = load_signing_key(settings(env="prod", jwt_private_key=key.to_pem()))
    assert derived.kid == hashlib.sha256(raw_public_key(key)).hexdigest()[:16]


def test_unusable_keys_are_refused_without_being_repeated(tmp_path: Path) -> None:
    secret_looking = (
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----"
    )
    with pytest.raises(SigningKeyError, match="USER_JWT_PRIVATE_KEY is not") as refused:
        load_signing_key(settings(env="prod", jwt_private_key=secret_looking))
    assert "c2VjcmV0" not in str(refused.value)
    path = tmp_path / "garbage.pem"
    path.write_text("not a key")
    with pytest.raises(SigningKeyError, match=r"garbage\.pem is not"):
        load_signing_key(settings(env="dev", jwt_key_file=path))


def test_without_any_key_dev_signs_with_a_key_of_its_own_and_production_refuses() -> None:
    first = load_signing_key(settings(env="dev"))
    assert load_signing_key(settings(env="dev")).kid != first.kid
    with pytest.raises(ValueError, match="USER_JWT_PRIVATE_KEY"):
        settings(env="prod")


def test_reset_tokens_are_sealed_to_the_notification_key_which_production_requires() -> None:
    opener = Opener.generate()
    key_file = Path("/etc/choreo/jwt.pem")
    sealer = load_notification_key(
        settings(env="prod", jwt_key_file=key_file, CHOREO_NOTIFICATION_KEY=opener.public_key)
    )
    assert sealer is not None
    assert sealer.public_key == opener.public_key
    assert load_notification_key(settings(env="dev")) is None  # in clear, and said at start-up
    with pytest.raises(ConfigurationError, match="CHOREO_NOTIFICATION_KEY must be set"):
        load_notification_key(settings(env="prod", jwt_key_file=key_file))
    with pytest.raises(ConfigurationError, match="32 bytes, not 3"):
        load_notification_key(settings(env="dev", CHOREO_NOTIFICATION_KEY="AAAA"))
