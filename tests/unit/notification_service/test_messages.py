"""Every notification renders from its templates, with nothing left unfilled."""

from __future__ import annotations

import re

import pytest

from notification_service.domain import Kind
from notification_service.messages import Renderer

ORDER = {"order": "#1A2B3C4D", "order_id": "1a2b3c4d-0000-4000-8000-000000000000"}

SAMPLES: dict[Kind, dict[str, object]] = {
    Kind.WELCOME: {},
    Kind.ORDER_RECEIVED: {**ORDER, "items": "3 items", "total": "42.50 USD"},
    Kind.ORDER_CONFIRMED: {**ORDER, "total": "42.50 USD"},
    Kind.ORDER_CANCELLED: {**ORDER, "reason": "you asked us to cancel it", "refund": True},
    Kind.PAYMENT_FAILED: {**ORDER, "amount": "42.50 USD", "reason": "your card was declined"},
    Kind.PAYMENT_ACTION_REQUIRED: {**ORDER, "amount": "42.50 USD"},
    Kind.REFUND_ISSUED: {**ORDER, "amount": "42.50 USD"},
    Kind.LOW_STOCK: {
        "product": "Burr grinder",
        "product_id": "9f0c3a52-1d43-4b7e-9a0e-2f7c1e0b6d11",
        "available": 2,
        "threshold": 3,
    },
    Kind.PASSWORD_RESET: {
        "link": "http://127.0.0.1:8000/reset-password?token=abc-DEF_123",
        "expires": "2026-11-30 10:30 UTC",
    },
}

# What each kind must say in words, besides the greeting.
SAYS: dict[Kind, tuple[str, ...]] = {
    Kind.WELCOME: ("Welcome to Choreo",),
    Kind.ORDER_RECEIVED: ("#1A2B3C4D", "3 items", "42.50 USD"),
    Kind.ORDER_CONFIRMED: ("#1A2B3C4D", "confirmed", "42.50 USD"),
    Kind.ORDER_CANCELLED: ("cancelled because you asked us to cancel it", "refunded"),
    Kind.PAYMENT_FAILED: ("42.50 USD", "because your card was declined"),
    Kind.PAYMENT_ACTION_REQUIRED: ("confirm the payment of 42.50 USD", "#1A2B3C4D", "3-D Secure"),
    Kind.REFUND_ISSUED: ("refunded 42.50 USD", "#1A2B3C4D"),
    Kind.LOW_STOCK: ("Burr grinder", "2 available", "threshold of 3"),
    Kind.PASSWORD_RESET: (
        "http://127.0.0.1:8000/reset-password?token=abc-DEF_123",
        "until 2026-11-30 10:30 UTC",
    ),
}


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def test_there_is_a_sample_for_every_kind() -> None:
    assert set(SAMPLES) == set(Kind) == set(SAYS)


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_renders_completely(renderer: Renderer, kind: Kind) -> None:
    message = renderer.render(kind, {"name": "Ada Lovelace", **SAMPLES[kind]})
    assert message.subject
    assert "\n" not in message.subject
    for part in (message.subject, message.text, message.html):
        for leftover in ("{{", "}}", "{%", "%}", "{#"):
            assert leftover not in part
    assert message.text.startswith("Hi Ada Lovelace,\n")
    assert "<p>Hi Ada Lovelace,</p>" in message.html
    assert f"<title>{message.subject}</title>" in message.html
    words = " ".join(message.text.split())
    html_words = " ".join(re.sub(r"<[^>]+>", "", message.html).split())
    for phrase in SAYS[kind]:
        assert phrase in words
        assert phrase in html_words


def test_a_missing_fact_is_an_error_not_a_blank(renderer: Renderer) -> None:
    with pytest.raises(Exception, match="total"):
        renderer.render(Kind.ORDER_CONFIRMED, {"name": "Ada", **ORDER})


def test_html_escapes_what_users_typed_and_text_keeps_it(renderer: Renderer) -> None:
    name = '<script>alert("x")</script> & Co'
    message = renderer.render(Kind.WELCOME, {"name": name})
    assert "<script>" not in message.html
    assert "&lt;script&gt;" in message.html
    assert message.text.startswith(f"Hi {name},")
    assert message.subject == "Welcome to Choreo"


@pytest.mark.parametrize("kind", list(Kind))
def test_no_subject_carries_what_a_user_typed(renderer: Renderer, kind: Kind) -> None:
    # A name (and an admin's product name) goes into the body only: before issue 13's review
    # the welcome e-mail's subject was "Welcome to Choreo, " and whatever the name said.
    typed = "Your account is locked, verify at http://evil.example"
    facts = {**SAMPLES[kind], **({"product": typed} if "product" in SAMPLES[kind] else {})}
    message = renderer.render(kind, {"name": typed, **facts})
    assert "evil" not in message.subject
    assert "evil" not in message.html.split("</title>")[0]
    assert f"Hi {typed}," in message.text


def test_a_cancellation_without_a_charge_says_so(renderer: Renderer) -> None:
    sample = {**SAMPLES[Kind.ORDER_CANCELLED], "refund": False}
    message = renderer.render(Kind.ORDER_CANCELLED, {"name": "Ada", **sample})
    assert "You have not been charged" in message.text
    assert "refunded" not in message.text


def test_a_name_on_several_lines_stays_out_of_the_subject(renderer: Renderer) -> None:
    message = renderer.render(Kind.WELCOME, {"name": "Ada\r\nBcc: someone@example.com"})
    assert message.subject == "Welcome to Choreo"


def test_the_reset_subject_is_fixed_and_holds_no_token(renderer: Renderer) -> None:
    message = renderer.render(Kind.PASSWORD_RESET, {"name": "Ada", **SAMPLES[Kind.PASSWORD_RESET]})
    assert message.subject == "Reset your Choreo password"
