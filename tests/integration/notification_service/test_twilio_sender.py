"""What the Twilio client makes of each way an SMS send can end: accepted, refused for now,
refused for good, Twilio unreachable, or a request that got no answer."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from choreo import dev_defaults
from choreo.testing import free_port
from notification_service.domain import Outcome
from notification_service.twilio_sender import Sms, TwilioSender

from .conftest import Phones, phone_number


def sender(api_base: str, timeout_seconds: float = 5) -> TwilioSender:
    return TwilioSender(
        dev_defaults.TWILIO_ACCOUNT_SID,
        dev_defaults.TWILIO_AUTH_TOKEN,
        api_base,
        "+15005550006",
        timeout_seconds=timeout_seconds,
    )


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


async def test_an_accepted_sms_is_on_the_phone_once(phones: Phones) -> None:
    twilio, to = sender(phones.base_url), phone_number()
    try:
        result = await twilio.send(Sms(to=to, body="Choreo: your order #1A2B3C4D is confirmed."))
    finally:
        await twilio.aclose()
    assert result.outcome is Outcome.ACCEPTED
    assert result.message_id is not None
    assert result.message_id.startswith("SM")
    assert await phones.texts(to) == ["Choreo: your order #1A2B3C4D is confirmed."]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (429, Outcome.REFUSED_FOR_NOW),
        (503, Outcome.REFUSED_FOR_NOW),
        (400, Outcome.REFUSED),
        (401, Outcome.REFUSED),
    ],
)
async def test_refusals(phones: Phones, status: int, outcome: Outcome) -> None:
    twilio, to = sender(phones.base_url), phone_number()
    await phones.fail(status, count=1)
    try:
        result = await twilio.send(Sms(to=to, body="hello"))
        assert result.outcome is outcome
        assert f"HTTP {status}" in result.detail
        assert "failure injected by the sink" in result.detail  # Twilio's own error message
        assert await phones.texts(to) == []
        assert (await twilio.send(Sms(to=to, body="hello"))).outcome is Outcome.ACCEPTED
    finally:
        await twilio.aclose()


async def test_a_number_twilio_cannot_text_is_refused(phones: Phones) -> None:
    twilio = sender(phones.base_url)
    try:
        result = await twilio.send(Sms(to="12345", body="hello"))
    finally:
        await twilio.aclose()
    assert result.outcome is Outcome.REFUSED
    assert "not a valid phone number" in result.detail


async def test_unreachable_twilio_is_refused_for_now() -> None:
    twilio = sender(f"http://127.0.0.1:{free_port()}")
    try:
        result = await twilio.send(Sms(to=phone_number(), body="hello"))
    finally:
        await twilio.aclose()
    assert result.outcome is Outcome.REFUSED_FOR_NOW
    assert "unreachable" in result.detail


async def test_no_answer_in_time_is_an_unknown_outcome(silent_server: str) -> None:
    twilio = sender(silent_server, timeout_seconds=0.5)
    try:
        result = await twilio.send(Sms(to=phone_number(), body="hello"))
    finally:
        await twilio.aclose()
    assert result.outcome is Outcome.NO_ANSWER
