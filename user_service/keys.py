"""The keys the service holds: the one it signs tokens with, given by the environment or kept
in a key file that dev and test environments generate on first start (`choreo up` keeps it in
its data directory); and the notification service's public key, which it seals reset tokens to.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from choreo.auth import AuthError, SigningKey
from choreo.sealing import Sealer, SealingKeyError
from choreo.service import ConfigurationError
from user_service.config import Settings
from user_service.domain import UserError

log = logging.getLogger(__name__)

UNSEALED_WARNING = (
    "seals no password-reset token (CHOREO_NOTIFICATION_KEY is unset): each one travels in "
    "clear through its outbox, user.event (every consumer and operator reads it) and dead letters"
)


class SigningKeyError(UserError):
    """The configured signing key cannot be used: the service cannot start."""


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """A stable key id: the first 16 hex digits of the SHA-256 of the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_signing_key(settings: Settings) -> SigningKey:
    """USER_JWT_PRIVATE_KEY, else USER_JWT_KEY_FILE (generated when missing in dev and test),
    else, in dev and test only, a key of this process alone."""
    generate = settings.env in ("dev", "test")
    if settings.jwt_private_key is not None:
        pem = settings.jwt_private_key.get_secret_value()
        return _from_pem(pem, settings.jwt_key_id, "USER_JWT_PRIVATE_KEY")
    if settings.jwt_key_file is not None:
        path = settings.jwt_key_file
        if not path.exists():
            if not generate:
                raise SigningKeyError(
                    f"USER_JWT_KEY_FILE {path} does not exist; keys are generated only when "
                    "CHOREO_ENV is dev or test"
                )
            _write_new_key(path)
        try:
            pem = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise SigningKeyError(f"cannot read USER_JWT_KEY_FILE {path}: {error}") from None
        return _from_pem(pem, settings.jwt_key_id, f"USER_JWT_KEY_FILE {path}")
    if not generate:
        raise SigningKeyError("no token signing key: set USER_JWT_PRIVATE_KEY or USER_JWT_KEY_FILE")
    log.warning(
        "no USER_JWT_PRIVATE_KEY or USER_JWT_KEY_FILE: signing with a key of this process, so "
        "tokens die with it"
    )
    key = Ed25519PrivateKey.generate()
    return SigningKey(kid=key_id_of(key.public_key()), private_key=key)


def load_notification_key(settings: Settings) -> Sealer | None:
    """What reset tokens are sealed to: CHOREO_NOTIFICATION_KEY, which prod requires; None
    outside prod without it (tokens go in clear, and the service says so at start-up)."""
    if settings.notification_key is None:
        if settings.env == "prod":
            raise ConfigurationError(
                "CHOREO_NOTIFICATION_KEY must be set when CHOREO_ENV=prod: password-reset "
                "tokens are sealed to the notification service's key, so that no other reader "
                "of user.event can use them (`choreo event-keys` makes a key pair)"
            )
        return None
    try:
        return Sealer.from_text(settings.notification_key)
    except SealingKeyError as error:
        raise ConfigurationError(
            f"CHOREO_NOTIFICATION_KEY is not the notification service's public key: {error}"
        ) from None


def _from_pem(pem: str, kid: str | None, origin: str) -> SigningKey:
    try:
        private_key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        # The library's message may quote the input; this one never does.
        raise SigningKeyError(
            f"{origin} is not an unencrypted PEM private key (Ed25519, PKCS#8)"
        ) from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise SigningKeyError(f"{origin} must be an Ed25519 private key (PEM, PKCS#8)")
    try:
        return SigningKey.from_pem(pem, kid or key_id_of(private_key.public_key()))
    except AuthError as error:
        raise SigningKeyError(f"{origin}: {error}") from None


def _write_new_key(path: Path) -> None:
    """Create `path` holding a new key, readable by this user only. Replicas racing to create
    it all end up with the one that was linked into place first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = SigningKey(kid="", private_key=Ed25519PrivateKey.generate())
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(key.to_pem())
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
            log.info("generated a token signing key in %s", path)
    finally:
        os.unlink(temporary)
