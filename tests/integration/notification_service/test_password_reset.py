"""The password-reset e-mail: sent once to the address its event names, with the link in the
body and a fixed subject; the token kept in no table of the service and in no log line."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from choreo.events import Event
from choreo.testing import StartService, publish

from .conftest import (
    Sink,
    address,
    applied,
    eventually,
    new_id,
    query,
    start_notification,
    user_deleted,
    user_registered,
)

RESET_URL = "https://shop.example/reset-password?token="
PHISHING = "Your account is locked, verify at http://evil.example\r\nBcc: x@evil.example"


def password_reset_requested(
    user_id: str, email: str, full_name: str | None, *, expires_in: timedelta
) -> tuple[Event, str]:
    token = secrets.token_urlsafe(32)
    data = {
        "user_id": user_id,
        "email": email,
        "full_name": full_name,
        "token": token,
        "expires_at": datetime.now(UTC) + expires_in,
    }
    return Event(type="PasswordResetRequested", subject=user_id, data=data), token


async def test_the_reset_link_is_emailed_once_and_kept_nowhere(
    start_service: StartService,
    sink: Sink,
    kafka_bootstrap: str,
    topics: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="choreo.stack")
    ada, mallory, bob, carl = new_id(), new_id(), new_id(), new_id()
    ada_email, mallory_email, bob_email = address("ada"), address("mallory"), address("bob")
    carl_email = address("carl")
    live = timedelta(minutes=30)
    ada_reset, ada_token = password_reset_requested(ada, ada_email, "Ada Lovelace", expires_in=live)
    # No UserRegistered needed: the event names the address (an account the service has not
    # heard of yet still gets its link).
    mallory_reset, mallory_token = password_reset_requested(
        mallory, mallory_email, PHISHING, expires_in=live
    )
    expired, expired_token = password_reset_requested(
        bob, bob_email, "Bob", expires_in=-timedelta(seconds=1)
    )
    deleted, deleted_token = password_reset_requested(carl, carl_email, "Carl", expires_in=live)
    await publish(
        kafka_bootstrap,
        topics,
        user_registered(carl, carl_email, "Carl"),
        user_deleted(carl),
        ada_reset,
        ada_reset,  # redelivered: still one e-mail
        mallory_reset,
        expired,
        deleted,
    )
    notification = start_notification(
        start_service,
        sink,
        NOTIFICATION_PASSWORD_RESET_URL=RESET_URL,
        NOTIFICATION_LOG_LEVEL="DEBUG",
    )

    async def all_applied() -> bool:
        events = (ada_reset, mallory_reset, expired, deleted)
        return all([await applied(notification, event) for event in events])

    await eventually(all_applied, "the reset events applied")
    [mail] = await sink.messages(ada_email)
    assert mail["subject"] == "Reset your Choreo password"
    assert mail["personalizations"][0]["to"] == [{"email": ada_email, "name": "Ada Lovelace"}]
    text, html = (part["value"] for part in mail["content"])
    assert text.startswith("Hi Ada Lovelace,\n")
    assert f"{RESET_URL}{ada_token}" in text
    assert f'href="{RESET_URL}{ada_token}"' in html
    # A name is never the subject, and shows on one line.
    [phishing] = await sink.messages(mallory_email)
    assert phishing["subject"] == "Reset your Choreo password"
    assert "\r" not in str(phishing)
    assert mallory_token in phishing["content"][0]["value"]
    # Expired meanwhile, or for a deleted user: nothing sent.
    assert await sink.messages(bob_email) == []
    assert [m["subject"] for m in await sink.messages(carl_email)] == ["Welcome to Choreo"]

    # E-mail only: no in-app notification holds the link, and no table holds a token.
    assert (
        await query(
            notification, "SELECT kind FROM notifications WHERE user_id IN (%s, %s)", ada, mallory
        )
        == []
    )
    deliveries = await query(
        notification, "SELECT kind, status FROM deliveries WHERE recipient = %s", ada
    )
    assert deliveries == [("password_reset", "sent")]
    tables = await query(
        notification,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    )
    tokens = (ada_token, mallory_token, expired_token, deleted_token)
    for (table,) in tables:
        rows = await query(notification, f'SELECT t::text FROM "{table}" AS t')
        for (row,) in rows:
            assert all(token not in row for token in tokens), f"a reset token is in {table}"

    def logged() -> str:
        name = f"choreo.stack.{notification.service}"
        return "\n".join(r.getMessage() for r in caplog.records if r.name == name)

    async def captured() -> bool:
        return "password_reset e-mail of event" in logged()

    await eventually(captured, "the service's log lines are captured")
    assert all(token not in logged() for token in tokens)
