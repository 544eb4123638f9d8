"""The notification service's rules: when an e-mail is sent, what SendGrid's answers mean, how
codes and amounts read, and how a stored name is shown."""

from __future__ import annotations

import pytest

from notification_service.domain import (
    MAX_NAME_LENGTH,
    Contact,
    DeliveryStatus,
    Outcome,
    Step,
    cancel_reason_in_words,
    count_of,
    decline_reason_in_words,
    format_money,
    next_step,
    order_reference,
    outcome_of_status,
    printable_name,
    status_after,
)


@pytest.mark.parametrize(
    ("status", "step"),
    [
        (None, Step.SEND),
        (DeliveryStatus.FAILED, Step.SEND_AGAIN),
        (DeliveryStatus.SENT, Step.SKIP_SENT),
        (DeliveryStatus.CLAIMED, Step.SKIP_UNKNOWN),
    ],
)
def test_only_a_delivery_known_not_to_have_gone_out_is_sent(
    status: DeliveryStatus | None, step: Step
) -> None:
    assert next_step(status) is step


@pytest.mark.parametrize(
    ("http_status", "outcome"),
    [
        (202, Outcome.ACCEPTED),
        (200, Outcome.ACCEPTED),
        (429, Outcome.REFUSED_FOR_NOW),
        (500, Outcome.REFUSED_FOR_NOW),
        (502, Outcome.REFUSED_FOR_NOW),
        (503, Outcome.REFUSED_FOR_NOW),
        (400, Outcome.REFUSED),
        (401, Outcome.REFUSED),
        (403, Outcome.REFUSED),
        (413, Outcome.REFUSED),
    ],
)
def test_sendgrid_answers(http_status: int, outcome: Outcome) -> None:
    assert outcome_of_status(http_status) is outcome


def test_what_a_send_leaves_a_delivery_in_and_what_a_redelivery_then_does() -> None:
    assert next_step(status_after(Outcome.ACCEPTED)) is Step.SKIP_SENT
    assert next_step(status_after(Outcome.REFUSED_FOR_NOW)) is Step.SEND_AGAIN
    assert next_step(status_after(Outcome.REFUSED)) is Step.SEND_AGAIN
    # No answer: it may have gone out, so it is treated like a crash during the send.
    assert next_step(status_after(Outcome.NO_ANSWER)) is Step.SKIP_UNKNOWN


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("OUT_OF_STOCK", "some of its items are out of stock"),
        ("PAYMENT_FAILED", "the payment did not go through"),
        ("TIMEOUT", "it could not be completed in time"),
        ("CUSTOMER_REQUEST", "you asked us to cancel it"),
        ("SOMETHING_NEW", "it could not be completed"),
    ],
)
def test_cancel_reasons_in_words(reason: str, words: str) -> None:
    assert cancel_reason_in_words(reason) == words


def test_decline_codes_in_words() -> None:
    assert decline_reason_in_words("card_declined", "Your card was declined.") == (
        "your card was declined"
    )
    assert "3-D Secure" in decline_reason_in_words("authentication_required", "")
    assert "no saved card" in decline_reason_in_words("no_payment_method", "whatever")
    # A code not known here reads as the payment service's message, which customers may see.
    assert decline_reason_in_words("do_not_honor", "The bank did not honour it.") == (
        "the bank did not honour it"
    )
    assert decline_reason_in_words("do_not_honor", "  ") == (
        "the payment provider refused the payment"
    )


@pytest.mark.parametrize(
    ("amount", "currency", "written"),
    [
        (2500, "USD", "25.00 USD"),
        (5, "eur", "0.05 EUR"),
        (123456789, "USD", "1,234,567.89 USD"),
        (1500, "JPY", "1,500 JPY"),
        (1234, "KWD", "1.234 KWD"),
        (-250, "USD", "-2.50 USD"),
    ],
)
def test_money_is_written_in_the_currency_s_units(amount: int, currency: str, written: str) -> None:
    assert format_money(amount, currency) == written


def test_order_reference_and_counts() -> None:
    assert order_reference("1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d") == "#1A2B3C4D"
    assert count_of(1, "item") == "1 item"
    assert count_of(3, "item") == "3 items"


def test_a_deleted_or_address_less_contact_is_not_reachable() -> None:
    alive = Contact("u1", "ada@example.com", "Ada Lovelace", "customer", deleted=False)
    assert alive.reachable
    assert alive.greeting_name == "Ada Lovelace"
    assert not Contact("u1", None, None, None, deleted=True).reachable
    assert not Contact("u1", None, "Ada", "customer", deleted=False).reachable
    assert Contact("u1", "a@example.com", " ", None, deleted=False).greeting_name == "there"


# Names stored before the user service refused them (issue 13) still reach the e-mails.
@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("Ada Lovelace", "Ada Lovelace"),
        (
            "Your account is locked, verify at http://evil.example\r\nBcc: x@evil.example",
            "Your account is locked, verify at http://evil.example Bcc: x@evil.example",
        ),
        ("Ada\tLovelace\n", "Ada Lovelace"),
        ("Ada\x1b[31mLovelace", "Ada [31mLovelace"),
        ("\u202eecalevoL adA", "ecalevoL adA"),
        ("A\u200bd\u200ca\u200d \u2066Lovelace\u2069\ufeff", "Ada Lovelace"),
        ("Ada\u00ad\ue000 Lovelace", "Ada Lovelace"),
        ("\uff2d\uff41\uff52\uff49\uff45\u00a0\u00a0\uff23\uff55\uff52\uff49\uff45", "Marie Curie"),
        ("\r\n\t \u200b", ""),
        ("", ""),
        (None, ""),
        ("x" * 300, "x" * MAX_NAME_LENGTH),
    ],
)
def test_a_stored_name_is_shown_printable_on_one_line(stored: str | None, shown: str) -> None:
    assert printable_name(stored) == shown
    contact = Contact("u1", "ada@example.com", stored, "customer", deleted=False)
    assert contact.display_name == (shown or None)
    assert contact.greeting_name == (shown or "there")
    assert printable_name(shown) == shown  # already printable: left alone
