"""`choreo event-keys`: an env file the services start with, signing and sealing alike."""

from __future__ import annotations

import os
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from choreo.cli import app
from choreo.sealing import password_reset_context
from choreo.signing import EventKeys, EventSigner
from notification_service.config import Settings as NotificationSettings
from notification_service.keys import load_sealing_key
from user_service.config import Settings as UserSettings
from user_service.keys import load_notification_key

runner = CliRunner()


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("CHOREO_", "USER_", "NOTIFICATION_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CHOREO_ENV", "prod")
    monkeypatch.setenv("USER_JWT_KEY_FILE", "/etc/choreo/jwt.pem")
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.not-a-real-key")
    monkeypatch.setenv("NOTIFICATION_PASSWORD_RESET_URL", "https://shop.example/reset?token=")
    monkeypatch.setenv("DATABASE_URL", "postgresql://127.0.0.1/postgres")


def test_the_env_file_signs_and_seals_in_production(tmp_path: Path) -> None:
    env_file = tmp_path / "choreo.env"

    result = runner.invoke(app, ["event-keys", "--output", str(env_file)])

    assert result.exit_code == 0, result.output
    assert "sealing key pair" in result.output
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    users = UserSettings(_env_file=env_file)  # type: ignore[call-arg]
    notifications = NotificationSettings(_env_file=env_file)  # type: ignore[call-arg]
    sealer, opener = load_notification_key(users), load_sealing_key(notifications)
    assert sealer is not None
    assert opener is not None
    context = password_reset_context(uuid.uuid4(), datetime.now(UTC))
    assert opener.open(sealer.seal(b"token", context), context) == b"token"
    # And the event keys beside them, as before.
    assert users.event_keys is not None
    assert users.event_signing_key is not None
    signer = EventSigner.from_pem(users.event_signing_key.get_secret_value())
    assert EventKeys.from_json(users.event_keys).lists("user", signer.public_key)
    assert notifications.event_keys == users.event_keys


def test_printed_keys_are_new_each_time() -> None:
    first, second = (runner.invoke(app, ["event-keys"]).output for _ in range(2))

    def public_key(output: str) -> str:
        [line] = [line for line in output.splitlines() if line.startswith("CHOREO_NOTIFICATION")]
        return line.partition("=")[2]

    assert "NOTIFICATION_SEALING_KEY='-----BEGIN PRIVATE KEY-----" in first
    assert public_key(first) != public_key(second)
