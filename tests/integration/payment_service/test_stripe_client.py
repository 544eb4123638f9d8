"""The Stripe gateway against localstripe: what the saga relies on from the provider."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from choreo.stack.stripe import TEST_SECRET_KEY
from choreo.testing import free_port
from payment_service.domain import IntentState, ProviderError, ProviderUnavailableError
from payment_service.stripe_client import Intent, NewCard, OpenIntent, StripeGateway

from .conftest import DECLINED_ON_CHARGE, NEEDS_AUTHENTICATION, VISA, Localstripe, new_id


async def charge(gateway: StripeGateway, number: str, order_id: str) -> Intent:
    customer = await gateway.create_customer(new_id())
    card = await gateway.create_payment_method(customer, NewCard(number, 12, 2034, "739"))
    intent = await gateway.create_intent(
        amount=1500,
        currency="USD",
        customer_id=customer,
        payment_method_id=card.provider_payment_method_id,
        metadata={"order_id": order_id},
    )
    assert intent.state is IntentState.UNCONFIRMED
    return await gateway.confirm_intent(intent.id)


async def test_confirm_answers_success_decline_or_the_customers_action(
    stripe_api_base: str,
) -> None:
    gateway = StripeGateway(TEST_SECRET_KEY, stripe_api_base)
    succeeded = await charge(gateway, VISA, new_id())
    assert succeeded.state is IntentState.SUCCEEDED
    assert (await gateway.retrieve_intent(succeeded.id)).state is IntentState.SUCCEEDED

    declined = await charge(gateway, DECLINED_ON_CHARGE, new_id())
    assert (declined.state, declined.decline_code) == (IntentState.DECLINED, "card_declined")
    retrieved = await gateway.retrieve_intent(declined.id)
    assert (retrieved.state, retrieved.decline_code) == (IntentState.DECLINED, "card_declined")

    unauthenticated = await charge(gateway, NEEDS_AUTHENTICATION, new_id())
    assert unauthenticated.state is IntentState.REQUIRES_ACTION
    assert unauthenticated.action is not None
    assert unauthenticated.action.type == "use_stripe_sdk"
    assert unauthenticated.action.client_secret.startswith(f"{unauthenticated.id}_secret_")
    retrieved = await gateway.retrieve_intent(unauthenticated.id)
    assert retrieved.action == unauthenticated.action


async def test_a_refund_asked_twice_is_made_once(
    stripe_api_base: str, localstripe: Localstripe
) -> None:
    gateway = StripeGateway(TEST_SECRET_KEY, stripe_api_base)
    succeeded = await charge(gateway, VISA, new_id())
    first = await gateway.refund(succeeded.id, amount=1500, metadata={})
    again = await gateway.refund(succeeded.id, amount=1500, metadata={})
    assert again == first
    assert first.amount == 1500
    assert [r.id for r in await localstripe.refunds_of(succeeded.id)] == [first.id]


async def test_an_unreachable_provider_is_retriable_and_a_refused_request_is_not(
    stripe_api_base: str,
) -> None:
    unreachable = StripeGateway(TEST_SECRET_KEY, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProviderUnavailableError) as raised:
        await unreachable.retrieve_intent("pi_anything")
    assert raised.value.retriable

    gateway = StripeGateway(TEST_SECRET_KEY, stripe_api_base)
    with pytest.raises(ProviderError) as refused:
        await gateway.retrieve_intent("pi_doesnotexist")
    assert not refused.value.retriable


async def test_open_intents_are_listed_from_a_creation_time(
    stripe_api_base: str, localstripe: Localstripe
) -> None:
    """The open-intent sweep lists only the intents created since it last looked, with the
    list's `created[gte]` filter (which the emulator carries as Stripe does)."""
    gateway = StripeGateway(TEST_SECRET_KEY, stripe_api_base)
    customer = await gateway.create_customer(new_id())
    card = await gateway.create_payment_method(customer, NewCard(VISA, 12, 2034, "739"))
    order_id = new_id()
    opened = await gateway.create_intent(
        amount=700,
        currency="USD",
        customer_id=customer,
        payment_method_id=card.provider_payment_method_id,
        metadata={"order_id": order_id, "payment_id": new_id()},
    )
    created = (await localstripe.client.v1.payment_intents.retrieve_async(opened.id)).created
    moment = datetime.fromtimestamp(created, UTC)

    def ours(listed: list[OpenIntent]) -> list[str]:
        return [open_intent.intent.id for open_intent in listed if open_intent.order_id == order_id]

    assert ours(await gateway.open_intents()) == [opened.id]
    assert ours(await gateway.open_intents(created_since=moment)) == [opened.id]
    assert ours(await gateway.open_intents(created_since=moment + timedelta(seconds=1))) == []
    assert ours(await gateway.open_intents(created_until=moment)) == [opened.id]
    assert ours(await gateway.open_intents(created_until=moment - timedelta(seconds=1))) == []

    async with httpx.AsyncClient(base_url=stripe_api_base, auth=(TEST_SECRET_KEY, "")) as raw:
        malformed = await raw.get("/v1/payment_intents", params={"created[after]": created})
    assert malformed.status_code == 400
