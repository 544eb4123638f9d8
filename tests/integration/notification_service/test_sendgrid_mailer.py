"""What the SendGrid client makes of each way a send can end: accepted, refused for now,
refused for good, SendGrid unreachable, or a request that got no answer."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from choreo.stack.sendgrid_sink import SINK_API_KEY
from choreo.testing import free_port
from notification_service.domain import Outcome
from notification_service.sendgrid_mailer import Email, SendGridMailer

from .conftest import Sink, address


def email_to(to: str) -> Email:
    return Email(
        to_email=to,
        to_name="Ada Lovelace",
        subject="Your order #1A2B3C4D is confirmed",
        text="Hi Ada Lovelace,\n",
        html="<p>Hi Ada Lovelace,</p>",
        custom_args={"event_id": "e-1", "notification": "order_confirmed"},
    )


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


async def test_an_accepted_e_mail_is_in_the_mailbox_once(sink: Sink) -> None:
    mailer = SendGridMailer(SINK_API_KEY, sink.host, "shop@example.com", timeout_seconds=5)
    to = address("ada")
    result = await mailer.send(email_to(to))
    assert result.outcome is Outcome.ACCEPTED
    assert result.message_id
    [message] = await sink.messages(to)
    assert message["from"] == {"email": "shop@example.com", "name": "Choreo"}
    assert message["subject"] == "Your order #1A2B3C4D is confirmed"
    assert message["custom_args"] == {"event_id": "e-1", "notification": "order_confirmed"}
    assert message["content"] == [
        {"type": "text/plain", "value": "Hi Ada Lovelace,\n"},
        {"type": "text/html", "value": "<p>Hi Ada Lovelace,</p>"},
    ]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (429, Outcome.REFUSED_FOR_NOW),
        (503, Outcome.REFUSED_FOR_NOW),
        (400, Outcome.REFUSED),
        (401, Outcome.REFUSED),
    ],
)
async def test_refusals(sink: Sink, status: int, outcome: Outcome) -> None:
    mailer = SendGridMailer(SINK_API_KEY, sink.host, "shop@example.com", timeout_seconds=5)
    to = address("ada")
    await sink.fail(status, count=1)
    result = await mailer.send(email_to(to))
    assert result.outcome is outcome
    assert f"HTTP {status}" in result.detail
    assert "failure injected by the sink" in result.detail  # SendGrid's own error message
    assert await sink.messages(to) == []
    assert (await mailer.send(email_to(to))).outcome is Outcome.ACCEPTED


async def test_unreachable_sendgrid_is_refused_for_now() -> None:
    mailer = SendGridMailer(SINK_API_KEY, f"http://127.0.0.1:{free_port()}", "a@example.com")
    result = await mailer.send(email_to(address("ada")))
    assert result.outcome is Outcome.REFUSED_FOR_NOW
    assert "unreachable" in result.detail


async def test_no_answer_in_time_is_an_unknown_outcome(silent_server: str) -> None:
    mailer = SendGridMailer(SINK_API_KEY, silent_server, "a@example.com", timeout_seconds=0.5)
    started = time.monotonic()
    result = await mailer.send(email_to(address("ada")))
    assert result.outcome is Outcome.NO_ANSWER
    assert time.monotonic() - started < 5
