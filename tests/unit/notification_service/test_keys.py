"""The key that opens sealed reset tokens: required in production, and refused when it is not
the key the user service seals to."""

from __future__ import annotations

import os

import pytest

from choreo.sealing import Opener
from choreo.service import ConfigurationError
from choreo.signing import EventSigner
from notification_service.config import Settings
from notification_service.keys import load_sealing_key

OPENER = Opener.generate()


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("CHOREO_", "NOTIFICATION_", "SENDGRID_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NOTIFICATION_DATABASE_URL", "postgresql://127.0.0.1/notifications")


def test_the_key_and_its_public_key_open_sealed_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFICATION_SEALING_KEY", OPENER.to_pem())
    monkeypatch.setenv("CHOREO_NOTIFICATION_KEY", OPENER.public_key)
    opener = load_sealing_key(Settings())
    assert opener is not None
    assert opener.public_key == OPENER.public_key
    assert OPENER.to_pem() not in repr(Settings())


def test_without_a_key_dev_opens_nothing_and_production_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_sealing_key(Settings()) is None
    monkeypatch.setenv("CHOREO_ENV", "prod")
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.not-a-real-key")
    monkeypatch.setenv("NOTIFICATION_PASSWORD_RESET_URL", "https://shop.example/reset?token=")
    with pytest.raises(ConfigurationError, match="NOTIFICATION_SEALING_KEY must be set"):
        load_sealing_key(Settings())


@pytest.mark.parametrize(
    ("sealing_key", "public_key", "reason"),
    [
        (None, OPENER.public_key, "NOTIFICATION_SEALING_KEY is not"),
        (OPENER.to_pem(), Opener.generate().public_key, "is not the public key"),
        (EventSigner.generate().to_pem(), None, "must be X25519"),
        ("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----", None, "not a PEM"),
    ],
    ids=["public-only", "mismatched", "ed25519", "garbled"],
)
def test_a_key_that_would_dead_letter_every_reset_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, sealing_key: str | None, public_key: str | None, reason: str
) -> None:
    if sealing_key is not None:
        monkeypatch.setenv("NOTIFICATION_SEALING_KEY", sealing_key)
    if public_key is not None:
        monkeypatch.setenv("CHOREO_NOTIFICATION_KEY", public_key)
    with pytest.raises(ConfigurationError, match=reason) as refused:
        load_sealing_key(Settings())
    assert "c2VjcmV0" not in str(refused.value)
