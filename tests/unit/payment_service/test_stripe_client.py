"""How Stripe's errors become the service's: retriable or not, a decline or a fault."""

from __future__ import annotations

import pytest
import stripe

from choreo.errors import TransientError
from payment_service.domain import (
    CardDeclinedError,
    InvalidCardError,
    PaymentError,
    ProviderError,
    ProviderUnavailableError,
)
from payment_service.stripe_client import NewCard, _translated_errors


@pytest.mark.parametrize(
    "error",
    [
        stripe.APIConnectionError("connection refused"),
        stripe.RateLimitError("slow down", http_status=429),
        stripe.APIError("internal", http_status=500),
        stripe.APIError("bad gateway", http_status=502),
    ],
)
def test_failures_that_may_pass_are_retriable(error: stripe.StripeError) -> None:
    with pytest.raises(ProviderUnavailableError) as raised, _translated_errors():
        raise error
    assert isinstance(raised.value, TransientError)
    assert raised.value.retriable


@pytest.mark.parametrize(
    "error",
    [
        stripe.AuthenticationError("Invalid API Key provided", http_status=401),
        stripe.InvalidRequestError("No such payment_intent", "intent", http_status=404),
        stripe.PermissionError("not allowed", http_status=403),
    ],
)
def test_requests_stripe_will_always_refuse_are_not_retried(error: stripe.StripeError) -> None:
    with pytest.raises(ProviderError) as raised, _translated_errors():
        raise error
    assert not raised.value.retriable


def test_a_card_error_is_a_decline_with_its_code() -> None:
    error = stripe.CardError("Your card was declined.", "card", "card_declined", http_status=402)
    with pytest.raises(CardDeclinedError) as raised, _translated_errors():
        raise error
    assert raised.value.code == "card_declined"
    assert not raised.value.retriable


def test_refused_card_details_are_not_quoted_back() -> None:
    number = "4242424242424241"
    error = stripe.InvalidRequestError(f"Invalid card number {number}", "number", http_status=400)
    with pytest.raises(InvalidCardError) as raised, _translated_errors(invalid_code="invalid_card"):
        raise error
    assert raised.value.code == "invalid_card"
    assert number not in str(raised.value)
    assert isinstance(raised.value, PaymentError)


def test_new_card_details_never_show_in_its_repr() -> None:
    card = NewCard(number="4242424242424242", exp_month=12, exp_year=2034, cvc="739")
    assert "4242424242424242" not in repr(card)
    assert "739" not in repr(card)
