"""The password-reset e-mail: sent once to the address its event names, with the link in the
body and a fixed subject; the token kept in no table of the service and in no log line. A token
sealed to another key, for another account, or altered, is dead-lettered and no e-mail sent."""

from __future__ import annotations

import dataclasses
import logging
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from choreo import records
from choreo.events import Event
from choreo.sealing import Opener, Sealer, password_reset_context
from choreo.testing import NOTIFICATION_OPENER, StartService, eventually, publish, query
from choreo.testing import records as make

from .conftest import (
    Sink,
    address,
    applied,
    new_id,
    read_records,
    start_notification,
    user_deleted,
    user_registered,
)

RESET_URL = "https://shop.example/reset-password?token="
PHISHING = "Your account is locked, verify at http://evil.example\r\nBcc: x@evil.example"


def password_reset_requested(
    user_id: str,
    email: str,
    full_name: str | None,
    *,
    expires_in: timedelta,
    sealer: Sealer | None = NOTIFICATION_OPENER.sealer,
    sealed_for: str | None = None,
) -> tuple[Event[records.PasswordResetRequested], str]:
    """As the user service publishes it: the token sealed to the notification service's key
    (this run's) for this account and expiry, or in clear when `sealer` is None (a user
    service without CHOREO_NOTIFICATION_KEY). `sealed_for` seals it for another account."""
    token = secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + expires_in
    if sealer is None:
        clear = make.password_reset_requested(
            user_id=user_id, email=email, full_name=full_name, token=token, expires_at=expires_at
        )
        return clear, token
    context = password_reset_context(sealed_for or user_id, expires_at)
    sealed = make.password_reset_requested(
        user_id=user_id,
        email=email,
        full_name=full_name,
        expires_at=expires_at,
        sealed_token=sealer.seal(token.encode(), context),
    )
    return sealed, token


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
    # heard of yet still gets its link). A user service that seals nothing (dev without the
    # key) sends the token in clear: still mailed, with a warning.
    mallory_reset, mallory_token = password_reset_requested(
        mallory, mallory_email, PHISHING, expires_in=live, sealer=None
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
            notification.database_url,
            "SELECT kind FROM notifications WHERE user_id IN (%s, %s)",
            ada,
            mallory,
        )
        == []
    )
    deliveries = await query(
        notification.database_url, "SELECT kind, status FROM deliveries WHERE recipient = %s", ada
    )
    assert deliveries == [("password_reset", "sent")]
    tables = await query(
        notification.database_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    )
    tokens = (ada_token, mallory_token, expired_token, deleted_token)
    for (table,) in tables:
        rows = await query(notification.database_url, f'SELECT t::text FROM "{table}" AS t')
        for (row,) in rows:
            assert all(token not in row for token in tokens), f"a reset token is in {table}"

    def logged() -> str:
        name = f"choreo.stack.{notification.service}"
        return "\n".join(r.getMessage() for r in caplog.records if r.name == name)

    async def captured() -> bool:
        return "password_reset e-mail of event" in logged()

    await eventually(captured, "the service's log lines are captured")
    assert all(token not in logged() for token in tokens)
    assert f"the reset token of event {mallory_reset.id} came in clear" in logged()


async def test_a_reset_token_that_does_not_open_is_dead_lettered_and_not_mailed(
    start_service: StartService, sink: Sink, kafka_bootstrap: str, topics: str
) -> None:
    live = timedelta(minutes=30)
    dan, eve, fay, gus = new_id(), new_id(), new_id(), new_id()
    emails = {user: address(name) for user, name in ((dan, "dan"), (eve, "eve"), (fay, "fay"))}
    # Sealed to a key that is not the notification service's.
    wrong_key, wrong_key_token = password_reset_requested(
        dan, emails[dan], "Dan", expires_in=live, sealer=Opener.generate().sealer
    )
    # Sealed for Gus's account, carried by Eve's event (a token moved to another account).
    moved, moved_token = password_reset_requested(
        eve, emails[eve], "Eve", expires_in=live, sealed_for=gus
    )
    # Altered on the way.
    altered, altered_token = password_reset_requested(fay, emails[fay], "Fay", expires_in=live)
    assert altered.record.sealed_token is not None
    sealed = bytearray(altered.record.sealed_token)
    sealed[-1] ^= 0x01
    altered = Event(dataclasses.replace(altered.record, sealed_token=bytes(sealed)))
    refused = (wrong_key, moved, altered)
    await publish(kafka_bootstrap, topics, *refused)
    notification = start_notification(start_service, sink)

    dead = await read_records(kafka_bootstrap, f"{topics}notification.dlq", len(refused))
    headers = [dict(record.headers) for record in dead]
    assert {h["ce_id"].decode() for h in headers} == {event.id for event in refused}
    for header in headers:
        assert header["dlq.error.type"] == b"ResetTokenUnreadableError"
        message = header["dlq.error.message"].decode()
        assert "cannot be opened" in message
        assert "no e-mail was sent" in message
        assert header["dlq.attempts"] == b"1"  # permanent: not retried
    tokens = (wrong_key_token, moved_token, altered_token)
    for record in dead:
        assert all(token.encode() not in (record.value or b"") for token in tokens)
        assert all(token.encode() not in str(record.headers).encode() for token in tokens)
    assert all([await applied(notification, event) is False for event in refused])
    for email in emails.values():
        assert await sink.messages(email) == []
    rows = await query(
        notification.database_url,
        "SELECT count(*) FROM deliveries WHERE kind = %s",
        "password_reset",
    )
    assert rows == [(0,)]
