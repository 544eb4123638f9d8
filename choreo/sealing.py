"""Sealed secrets: a value an event carries that only the notification service can open.

A password-reset token is e-mailed by the notification service, but it travels on `user.event`,
which every consuming service and every operator reads, and waits in the user service's outbox
and in dead letters on the way. So the user service seals it (HPKE, RFC 9180, base mode:
DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305) to the notification service's
X25519 public key, and only that service's private key opens it. The seal is bound to an
`info` naming what the value is and which record it belongs to (for a reset token: the account
and the expiry), so a sealed token moved into another account's event does not open either.

Keys: the notification service's private key (PKCS#8 PEM) in `NOTIFICATION_SEALING_KEY`; its
public key in `CHOREO_NOTIFICATION_KEY`, the raw 32 bytes base64url-encoded as a JWK's `x`
(RFC 8037 §2), like the event keys of choreo.signing.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from choreo.errors import ChoreoError, PermanentError

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
_PASSWORD_RESET_LABEL = b"choreo sealed PasswordResetRequested.token v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SealingKeyError(ChoreoError):
    """A sealing key that cannot be used: not X25519, not PEM, not base64url, not 32 bytes."""


class SealedValueError(PermanentError):
    """A sealed value this key does not open: sealed to another key, for another record, or
    altered on the way. Trying again cannot help."""


def password_reset_context(user_id: str | uuid.UUID, expires_at: datetime) -> bytes:
    """The `info` a password-reset token is sealed with: a fixed label, then the account and
    the expiry in milliseconds since the epoch (what the event's timestamp-millis carries, so
    that the user service, which knows the expiry to the microsecond, and the notification
    service, which reads it from the event, bind the same bytes), each length-prefixed."""
    millis = (expires_at - _EPOCH) // timedelta(milliseconds=1)
    parts = (_PASSWORD_RESET_LABEL, str(uuid.UUID(str(user_id))).encode(), str(millis).encode())
    return b"".join(struct.pack(">I", len(part)) + part for part in parts)


class Sealer:
    """Seals values to one public key: how the user service holds the notification service's."""

    def __init__(self, key: X25519PublicKey) -> None:
        self._key = key

    @classmethod
    def from_text(cls, text: str) -> Sealer:
        """From CHOREO_NOTIFICATION_KEY; raises SealingKeyError naming what is wrong."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise SealingKeyError("not base64url text") from None
        if len(raw) != 32:
            raise SealingKeyError(f"an X25519 public key is 32 bytes, not {len(raw)}")
        sealer = cls(X25519PublicKey.from_public_bytes(raw))
        try:
            sealer.seal(b"", b"")  # a low-order point (all zeros, say) shares no secret
        except ValueError:
            raise SealingKeyError(
                "not a usable X25519 public key: no key exchange with it"
            ) from None
        return sealer

    @property
    def public_key(self) -> str:
        """The public key as CHOREO_NOTIFICATION_KEY holds it (raw, base64url)."""
        raw = self._key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        """`plaintext` sealed for the holder of the private key, bound to `context`: the
        encapsulated key (32 bytes), then the ciphertext and its 16-byte tag."""
        return SUITE.encrypt(plaintext, self._key, info=context)


class Opener:
    """Opens what was sealed to its public key: the notification service's private key."""

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> Opener:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: str) -> Opener:
        """Raises SealingKeyError unless `pem` is an unencrypted X25519 private key (PKCS#8)."""
        try:
            key = serialization.load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError, UnicodeEncodeError):
            # The library's message may quote the input; this one never does.
            raise SealingKeyError("not a PEM private key without a password") from None
        if not isinstance(key, X25519PrivateKey):
            raise SealingKeyError(f"the sealing key must be X25519, not {type(key).__name__}")
        return cls(key)

    def to_pem(self) -> str:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    @property
    def sealer(self) -> Sealer:
        """Seals to this key."""
        return Sealer(self._key.public_key())

    @property
    def public_key(self) -> str:
        return self.sealer.public_key

    def open(self, sealed: bytes, context: bytes) -> bytes:
        """The plaintext `sealed` holds; SealedValueError unless it was sealed to this key with
        this very `context` and arrived unaltered."""
        try:
            return SUITE.decrypt(sealed, self._key, info=context)
        except (InvalidTag, ValueError):
            raise SealedValueError(
                f"the sealed value does not open with the key whose public key is "
                f"{self.public_key}: it was sealed to another key or for another record, or "
                "altered"
            ) from None


def key_in(path: Path) -> Opener:
    """The private key kept in `path` (mode 600), made on first use: how `choreo up` gives a dev
    stack sealed reset tokens that still open after its restarts."""
    try:
        return Opener.from_pem(path.read_text())
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    opener = Opener.generate()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(opener.to_pem())
    return opener
