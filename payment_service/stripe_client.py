"""The payment provider behind a narrow interface: Stripe, through its official SDK.

Answers are plain dataclasses in the service's own words. A card the provider refuses is a
decline (a result, or CardDeclinedError when saving a card); failures that may pass (5xx, 429,
timeouts, no connection) raise ProviderUnavailableError, which consumers retry; requests the
provider will always refuse raise ProviderError.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import stripe
from stripe import _util as stripe_util
from stripe.params import PaymentIntentListParams, PaymentIntentListParamsCreated

from payment_service.domain import (
    PAYMENT_CANCELED,
    PAYMENT_CANCELED_MESSAGE,
    CardDeclinedError,
    IntentState,
    InvalidCardError,
    ProviderError,
    ProviderUnavailableError,
)

_DECLINED = "card_declined"
_DECLINED_MESSAGE = "Your card was declined."


@dataclass(frozen=True, slots=True)
class NewCard:
    """Raw card details on their way to the provider; never stored, never printed."""

    number: str = field(repr=False)
    exp_month: int
    exp_year: int
    cvc: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class SavedCard:
    """A card the provider holds for a customer: its id and what may be shown of it."""

    provider_payment_method_id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    fingerprint: str | None = None
    """Stripe's `card.fingerprint`: the same for every PaymentMethod of one card number, so
    the risk lists can name a card without its number."""


@dataclass(frozen=True, slots=True)
class CustomerAction:
    """What the customer must do for an intent that `requires_action` (Stripe's
    `next_action`): the client passes `client_secret` to Stripe.js (`handleNextAction`) or a
    mobile SDK, which runs the 3-D Secure challenge, or sends the customer to `redirect_url`."""

    client_secret: str = field(repr=False)
    type: str  # next_action.type: use_stripe_sdk, redirect_to_url, ...
    redirect_url: str | None = None


@dataclass(frozen=True, slots=True)
class Intent:
    """A payment intent: the provider's id and where it stands."""

    id: str
    state: IntentState
    decline_code: str | None = None
    decline_message: str | None = None
    action: CustomerAction | None = None  # REQUIRES_ACTION only


@dataclass(frozen=True, slots=True)
class OpenIntent:
    """An intent the provider holds open (neither succeeded nor cancelled), with the order and
    payment its metadata names."""

    intent: Intent
    order_id: str
    payment_id: str | None
    created: datetime


@dataclass(frozen=True, slots=True)
class ProviderRefund:
    id: str
    amount: int


class StripeGateway:
    """Stripe (or localstripe) at `api_base`, called with the SDK's aiohttp client.

    aiohttp rather than the SDK's httpx client: the same request costs the service ~65 µs of
    CPU through aiohttp against ~550 µs through httpx (a loopback POST, 4,000 requests, 8 at a
    time, measured in session 14), and a charge makes two.
    """

    def __init__(self, api_key: str, api_base: str, *, timeout_seconds: float = 10.0) -> None:
        # The SDK logs request bodies at DEBUG, and prints them to stderr when STRIPE_LOG is
        # set: a card number must never reach a log.
        logging.getLogger("stripe").setLevel(logging.WARNING)
        stripe_util.STRIPE_LOG = None
        self._http_client = stripe.AIOHTTPClient(
            timeout=aiohttp.ClientTimeout(total=timeout_seconds)
        )
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            http_client=self._http_client,
            # Retries happen a level up, where a charge is resumed from what Stripe says it
            # did: a blind re-send of a confirm relies on idempotency keys the emulator ignores.
            max_network_retries=0,
        )

    async def aclose(self) -> None:
        """Close the HTTP connections (the service does it when it stops)."""
        await self._http_client.close_async()  # type: ignore[no-untyped-call]  # untyped in the SDK

    async def create_customer(self, user_id: str) -> str:
        with _translated_errors():
            customer = await self._client.v1.customers.create_async(
                params={"metadata": {"user_id": user_id}}
            )
        return customer.id

    async def create_payment_method(self, customer_id: str, card: NewCard) -> SavedCard:
        """Tokenize `card` and attach it to the customer."""
        with _translated_errors(invalid_code="invalid_card"):
            method = await self._client.v1.payment_methods.create_async(
                params={
                    "type": "card",
                    "card": {
                        "number": card.number,
                        "exp_month": card.exp_month,
                        "exp_year": card.exp_year,
                        "cvc": card.cvc,
                    },
                }
            )
            method = await self._client.v1.payment_methods.attach_async(
                method.id, params={"customer": customer_id}
            )
        return _saved_card(method)

    async def payment_method_from_token(self, customer_id: str, token: str) -> SavedCard:
        """Attach a card tokenized by the client: a PaymentMethod (`pm_`) or a token (`tok_`)."""
        with _translated_errors(invalid_code="invalid_token"):
            if token.startswith("tok_"):
                source = await self._client.v1.customers.payment_sources.create_async(
                    customer_id, params={"source": token}
                )
                if not isinstance(source, stripe.Card):
                    raise InvalidCardError("invalid_token", "The token does not hold a card.")
                return SavedCard(
                    provider_payment_method_id=source.id,
                    brand=source.brand.lower(),
                    last4=source.last4,
                    exp_month=source.exp_month,
                    exp_year=source.exp_year,
                    fingerprint=getattr(source, "fingerprint", None),
                )
            method = await self._client.v1.payment_methods.retrieve_async(token)
            if method.customer is not None and _id_of(method.customer) != customer_id:
                raise InvalidCardError("invalid_token", "The payment method is not yours.")
            method = await self._client.v1.payment_methods.attach_async(
                method.id, params={"customer": customer_id}
            )
        return _saved_card(method)

    async def create_intent(
        self,
        *,
        amount: int,
        currency: str,
        customer_id: str,
        payment_method_id: str,
        metadata: Mapping[str, str],
        manual_capture: bool = False,
    ) -> Intent:
        """An unconfirmed intent: it moves no money until `confirm_intent`. With
        `manual_capture`, confirming only authorises the card (AUTHORISED) and `capture_intent`
        moves the money (Stripe's `capture_method=manual`, "Place a hold on a payment method")."""
        with _translated_errors():
            intent = await self._client.v1.payment_intents.create_async(
                params={
                    "amount": amount,
                    "currency": currency.lower(),
                    "customer": customer_id,
                    "payment_method": payment_method_id,
                    "metadata": dict(metadata),
                    "confirm": False,
                    "capture_method": "manual" if manual_capture else "automatic",
                }
            )
        return _intent(intent)

    async def capture_intent(self, intent_id: str) -> Intent:
        """Capture an authorised intent (SUCCEEDED); one already captured is returned as it is,
        so a capture retried after a crash captures once."""
        with _translated_errors():
            intent = await self._client.v1.payment_intents.retrieve_async(intent_id)
            if intent.status == "requires_capture":
                intent = await self._client.v1.payment_intents.capture_async(intent_id)
        return _intent(intent)

    async def confirm_intent(self, intent_id: str) -> Intent:
        """Charge the card; a declined card is an answer, not an error."""
        with _translated_errors():
            try:
                intent = await self._client.v1.payment_intents.confirm_async(intent_id)
            except stripe.CardError as error:
                return Intent(
                    id=intent_id,
                    state=IntentState.DECLINED,
                    decline_code=error.code or _DECLINED,
                    decline_message=error.user_message or _DECLINED_MESSAGE,
                )
        return _intent(intent)

    async def retrieve_intent(self, intent_id: str) -> Intent:
        with _translated_errors():
            intent = await self._client.v1.payment_intents.retrieve_async(intent_id)
        return _intent(intent)

    async def open_intents(
        self, created_since: datetime | None = None, created_until: datetime | None = None
    ) -> list[OpenIntent]:
        """Every open intent of the account whose metadata names an order, created at or after
        `created_since` (from the first when None) and at or before `created_until` (to the
        last when None), whole seconds, oldest or newest first as the provider lists them.

        Read page by page with the list's `created[gte]` and `created[lte]` filters (Stripe API
        reference, "List all PaymentIntents"); Stripe's search would filter on status too, but
        the emulator has none, so every intent created in the window is read and the open ones
        kept.
        """
        found = []
        params: PaymentIntentListParams = {"limit": 100}
        created: PaymentIntentListParamsCreated = {}
        if created_since is not None:
            created["gte"] = int(created_since.timestamp())
        if created_until is not None:
            created["lte"] = int(created_until.timestamp())
        if created:
            params["created"] = created
        with _translated_errors():
            page = await self._client.v1.payment_intents.list_async(params=params)
            async for intent in page.auto_paging_iter():
                if intent.status in ("succeeded", "canceled"):
                    continue
                metadata = intent.metadata.to_dict() if intent.metadata else {}
                order_id = metadata.get("order_id")
                if not order_id:
                    continue
                found.append(
                    OpenIntent(
                        intent=_intent(intent),
                        order_id=str(order_id),
                        payment_id=metadata.get("payment_id"),
                        created=datetime.fromtimestamp(intent.created, UTC),
                    )
                )
        return found

    async def cancel_intent(self, intent_id: str) -> None:
        with _translated_errors():
            await self._client.v1.payment_intents.cancel_async(intent_id)

    async def refund(
        self, intent_id: str, *, amount: int, metadata: Mapping[str, str]
    ) -> ProviderRefund:
        """Refund the intent's charge, or return the refund it already has.

        Looking first makes a refund retried after a crash safe without idempotency keys.
        """
        with _translated_errors():
            existing = await self._client.v1.refunds.list_async(
                params={"payment_intent": intent_id, "limit": 100}
            )
            for refund in existing.data:
                if refund.status in ("succeeded", "pending", "requires_action"):
                    return ProviderRefund(id=refund.id, amount=refund.amount)
            refund = await self._client.v1.refunds.create_async(
                params={"payment_intent": intent_id, "amount": amount, "metadata": dict(metadata)}
            )
        return ProviderRefund(id=refund.id, amount=refund.amount)


@contextlib.contextmanager
def _translated_errors(invalid_code: str | None = None) -> Iterator[None]:
    """Stripe's errors as the service's; `invalid_code` makes a 4xx the card's fault."""
    try:
        yield
    except stripe.CardError as error:
        raise CardDeclinedError(
            error.code or _DECLINED, error.user_message or _DECLINED_MESSAGE
        ) from None
    except (stripe.APIConnectionError, stripe.RateLimitError) as error:
        raise ProviderUnavailableError(f"Stripe is unreachable: {_summary(error)}") from None
    except (aiohttp.ClientError, TimeoutError) as error:
        # The SDK wraps what fails while sending; an answer whose body breaks off or times out
        # fails after that, as aiohttp's own error.
        raise ProviderUnavailableError(
            f"Stripe's answer did not arrive: {type(error).__name__}"
        ) from None
    except stripe.StripeError as error:
        status = error.http_status or 0
        if status >= 500 or status == 429:
            raise ProviderUnavailableError(f"Stripe failed: {_summary(error)}") from None
        if invalid_code is not None and isinstance(error, stripe.InvalidRequestError):
            # Stripe's own wording is not passed on: its messages about a parameter may quote
            # the value, and here the values are card details.
            raise InvalidCardError(
                error.code or invalid_code, "The payment provider refused the card details."
            ) from None
        raise ProviderError(f"Stripe refused the request: {_summary(error)}") from None


def _summary(error: stripe.StripeError) -> str:
    # The class, status and Stripe's own code and message: never the request, which may
    # hold card details.
    return (
        f"{type(error).__name__} (HTTP {error.http_status}, code {error.code}): "
        f"{error.user_message or ''}".rstrip()
    )


def _id_of(reference: str | stripe.Customer) -> str:
    return reference if isinstance(reference, str) else reference.id


def _saved_card(method: stripe.PaymentMethod) -> SavedCard:
    card = method.card
    if card is None:
        raise InvalidCardError("invalid_token", "The payment method is not a card.")
    return SavedCard(
        provider_payment_method_id=method.id,
        brand=card.brand.lower(),
        last4=card.last4,
        exp_month=card.exp_month,
        exp_year=card.exp_year,
        fingerprint=getattr(card, "fingerprint", None),
    )


def _intent(intent: stripe.PaymentIntent) -> Intent:
    status = intent.status
    if status == "succeeded":
        return Intent(intent.id, IntentState.SUCCEEDED)
    if status == "requires_confirmation":
        return Intent(intent.id, IntentState.UNCONFIRMED)
    if status == "requires_capture":
        return Intent(intent.id, IntentState.AUTHORISED)
    if status == "processing":
        return Intent(intent.id, IntentState.PROCESSING)
    if status == "canceled":
        return Intent(intent.id, IntentState.CANCELED, PAYMENT_CANCELED, PAYMENT_CANCELED_MESSAGE)
    if status == "requires_action":
        return Intent(intent.id, IntentState.REQUIRES_ACTION, action=_customer_action(intent))
    # requires_payment_method: the last attempt failed.
    error = getattr(intent, "last_payment_error", None)
    return Intent(
        intent.id,
        IntentState.DECLINED,
        getattr(error, "code", None) or _DECLINED,
        getattr(error, "message", None) or _DECLINED_MESSAGE,
    )


def _customer_action(intent: stripe.PaymentIntent) -> CustomerAction:
    next_action = intent.next_action
    redirect = getattr(next_action, "redirect_to_url", None) if next_action else None
    return CustomerAction(
        client_secret=intent.client_secret or "",
        type=getattr(next_action, "type", None) or "use_stripe_sdk",
        redirect_url=getattr(redirect, "url", None),
    )
