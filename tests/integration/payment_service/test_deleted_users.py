"""A deleted user's tokens stop working and no order of theirs is charged (issue 13, finding 4)."""

from __future__ import annotations

from choreo.auth import SigningKey
from choreo.events import Event
from choreo.records import UserDeleted
from choreo.testing import StartService, eventually, publish
from choreo.testing import records as make

from .conftest import (
    VISA,
    Localstripe,
    add_card,
    card,
    new_id,
    order_created,
    stock_reserved,
)
from .test_charges import settled_payment_events


def user_deleted(user_id: str) -> Event[UserDeleted]:
    return make.user_deleted(user_id=user_id)


async def test_no_order_of_a_deleted_user_is_charged_and_their_token_is_refused(
    start_service: StartService,
    signing_key: SigningKey,
    localstripe: Localstripe,
    kafka_bootstrap: str,
    topics: str,
) -> None:
    payment = start_service("payment")
    leaver, stayer = new_id(), new_id()
    for user in (leaver, stayer):
        async with payment.client(signing_key.issue(user)) as client:
            await add_card(client, card(VISA))
    left, stayed = new_id(), new_id()
    await publish(kafka_bootstrap, topics, user_deleted(leaver))

    async def refused_now() -> bool:
        async with payment.client(signing_key.issue(leaver)) as client:
            return (await client.get("/api/v1/payment-methods")).status_code == 401

    # user.event and the saga's topics are read concurrently: the orders come once the
    # deletion is applied, as orders placed after it would (else which comes first is a race).
    await eventually(refused_now, "the deletion applied")
    await publish(
        kafka_bootstrap,
        topics,
        order_created(left, leaver),
        stock_reserved(left),
        order_created(stayed, stayer),
        stock_reserved(stayed),
    )
    events = await settled_payment_events(payment, kafka_bootstrap, topics, applied=5)

    [failed] = events[left]
    assert (failed.type, failed.record.decline_code) == ("PaymentFailed", "account_deleted")
    assert await localstripe.intents_of(left) == []
    [succeeded] = events[stayed]
    assert succeeded.type == "PaymentSucceeded"

    async with payment.client(signing_key.issue(leaver)) as client:
        refused = await client.get("/api/v1/payment-methods")
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "the account was deleted"
    async with payment.client(signing_key.issue(stayer)) as client:
        assert (await client.get("/api/v1/payment-methods")).status_code == 200
