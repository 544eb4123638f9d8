"""Sealed secrets (choreo.sealing): only the notification service's key opens a sealed reset
token, and only for the account and expiry it was sealed for."""

from __future__ import annotations

import os
import stat
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from choreo.errors import PermanentError, failure_of
from choreo.sealing import (
    Opener,
    SealedValueError,
    Sealer,
    SealingKeyError,
    key_in,
    password_reset_context,
)
from choreo.signing import EventSigner

TOKEN = b"q2v5Xb9lY0bJ4m1c7kR3t8w6zP0aN5sH2dF4gJ7kL9o"
USER = uuid.UUID("3f1c5e0a-8d7b-4b8e-9a51-0c2d1e6f7a89")
EXPIRES = datetime(2026, 5, 4, 12, 30, 0, 123456, tzinfo=UTC)
OPENER = Opener.generate()
CONTEXT = password_reset_context(USER, EXPIRES)


def test_a_sealed_token_opens_with_the_key_and_context_it_was_sealed_for() -> None:
    sealed = Sealer.from_text(OPENER.public_key).seal(TOKEN, CONTEXT)

    assert TOKEN not in sealed
    assert len(sealed) == 32 + len(TOKEN) + 16  # encapsulated key, ciphertext, tag
    assert OPENER.open(sealed, CONTEXT) == TOKEN


def test_each_seal_is_new() -> None:
    assert OPENER.sealer.seal(TOKEN, CONTEXT) != OPENER.sealer.seal(TOKEN, CONTEXT)


def test_the_context_is_what_the_event_carries() -> None:
    # The user service knows the expiry to the microsecond, the event to the millisecond.
    read_back = EXPIRES.replace(microsecond=123000)
    assert password_reset_context(str(USER).upper(), read_back) == CONTEXT
    assert password_reset_context(USER, EXPIRES + timedelta(milliseconds=1)) != CONTEXT


def test_another_key_cannot_open_it() -> None:
    sealed = OPENER.sealer.seal(TOKEN, CONTEXT)

    with pytest.raises(SealedValueError, match="sealed to another key") as refused:
        Opener.generate().open(sealed, CONTEXT)
    assert TOKEN.decode() not in str(refused.value)


@pytest.mark.parametrize(
    "context",
    [
        password_reset_context(uuid.uuid4(), EXPIRES),
        password_reset_context(USER, EXPIRES + timedelta(minutes=30)),
        b"",
    ],
    ids=["another-account", "another-expiry", "no-context"],
)
def test_a_token_moved_to_another_record_does_not_open(context: bytes) -> None:
    sealed = OPENER.sealer.seal(TOKEN, CONTEXT)

    with pytest.raises(SealedValueError):
        OPENER.open(sealed, context)


@pytest.mark.parametrize("position", [0, 31, 32, -17, -1])
def test_an_altered_byte_is_refused(position: int) -> None:
    sealed = bytearray(OPENER.sealer.seal(TOKEN, CONTEXT))
    sealed[position] ^= 0x01

    with pytest.raises(SealedValueError):
        OPENER.open(bytes(sealed), CONTEXT)


@pytest.mark.parametrize(
    "sealed", [b"", b"\x00" * 10, b"\x00" * 48], ids=["empty", "short", "zero"]
)
def test_bytes_that_are_no_seal_are_refused(sealed: bytes) -> None:
    with pytest.raises(SealedValueError):
        OPENER.open(sealed, CONTEXT)


def test_a_refused_seal_is_dead_lettered_not_retried() -> None:
    assert isinstance(SealedValueError("x"), PermanentError)
    assert failure_of(SealedValueError("x")).value == "permanent"


def test_a_private_key_survives_pem() -> None:
    again = Opener.from_pem(OPENER.to_pem())
    assert again.public_key == OPENER.public_key
    assert again.open(OPENER.sealer.seal(TOKEN, CONTEXT), CONTEXT) == TOKEN


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("AAAA", "32 bytes, not 3"),
        ("***", "32 bytes|base64url"),
        ("a", "base64url|32 bytes"),
        ("A" * 43, "no key exchange"),  # all zeros: a low-order point
    ],
)
def test_an_unusable_public_key_is_named(text: str, reason: str) -> None:
    with pytest.raises(SealingKeyError, match=reason):
        Sealer.from_text(text)


def test_a_private_key_of_another_kind_is_refused_unrepeated() -> None:
    garbled = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"
    with pytest.raises(SealingKeyError, match="PEM") as refused:
        Opener.from_pem(garbled)
    assert "c2VjcmV0" not in str(refused.value)
    with pytest.raises(SealingKeyError, match="must be X25519, not Ed25519"):
        Opener.from_pem(EventSigner.generate().to_pem())


def test_a_kept_key_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "notification-sealing-key.pem"
    first = key_in(path)

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert key_in(path).public_key == first.public_key
