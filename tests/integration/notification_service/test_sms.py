"""SMS and notification preferences at the notification service, as a process on real
PostgreSQL and the broker, e-mailing a SendGrid sink and texting a Twilio sink: each customer
gets each notice on the channels they chose, once; an SMS Twilio refuses is dead-lettered and
replayed (`choreo dlq replay`) into exactly one SMS; an SMS chosen with no phone number."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from typer.testing import CliRunner

from choreo.cli import app
from choreo.testing import ServiceProcess, StartService, eventually, publish

from .conftest import (
    Phones,
    Sink,
    address,
    applied,
    new_id,
    order_confirmed,
    phone_number,
    preferences_changed,
    query,
    read_records,
    records_handled,
    start_notification,
    user_registered,
    user_updated,
)

SMS_ONLY = (False, True, False)  # (email, sms, in_app)
EMAIL_AND_SMS = (True, True, True)


async def in_app_kinds(notification: ServiceProcess, user_id: str) -> list[str]:
    rows = await query(
        notification.database_url,
        "SELECT kind FROM notifications WHERE user_id = %s ORDER BY created_at",
        user_id,
    )
    return [kind for (kind,) in rows]


async def deliveries_of(notification: ServiceProcess, user_id: str, kind: str) -> dict[str, Any]:
    """channel -> (status, last_error) of the user's deliveries of `kind`."""
    rows = await query(
        notification.database_url,
        "SELECT channel, status, last_error FROM deliveries WHERE recipient = %s AND kind = %s",
        user_id,
        kind,
    )
    return {channel: (status, error) for channel, status, error in rows}


async def test_a_customer_who_chose_sms_only_gets_one_sms_and_no_email(
    start_service: StartService, sink: Sink, phones: Phones, kafka_bootstrap: str, topics: str
) -> None:
    ada, ada_email, ada_phone = new_id(), address("ada"), phone_number()
    bob, bob_email, bob_phone = new_id(), address("bob"), phone_number()
    chosen = preferences_changed(ada, order_updates=SMS_ONLY)
    await publish(
        kafka_bootstrap,
        topics,
        user_registered(ada, ada_email, "Ada Lovelace"),
        user_updated(ada, ada_email, "Ada Lovelace", phone=ada_phone),
        chosen,
        user_registered(bob, bob_email, "Bob Babbage"),
        user_updated(bob, bob_email, "Bob Babbage", phone=bob_phone),
    )
    notification = start_notification(start_service, sink, phones)
    await eventually(lambda: applied(notification, chosen), "Ada's preferences applied")

    ada_order, bob_order = new_id(), new_id()
    confirmed = order_confirmed(ada_order, ada)
    await publish(kafka_bootstrap, topics, confirmed, order_confirmed(bob_order, bob))
    reference = "#" + ada_order.replace("-", "")[:8].upper()

    async def texted() -> bool:
        return bool(await phones.texts(ada_phone))

    await eventually(texted, "Ada's SMS")
    await eventually(lambda: applied(notification, confirmed), "Ada's confirmation handled")
    [text] = await phones.texts(ada_phone)
    assert (
        text == f"Choreo: your order {reference} is confirmed. We charged 37.50 USD to your card."
    )
    assert len(text) <= 160
    # No e-mail and no in-app notification of the order: only the welcome, by the defaults.
    assert await sink.subjects(ada_email) == ["Welcome to Choreo"]
    assert await in_app_kinds(notification, ada) == ["welcome"]
    assert await deliveries_of(notification, ada, "order_confirmed") == {"sms": ("sent", None)}

    # Bob chose nothing: e-mail and in-app, no SMS.
    async def mailed() -> bool:
        return any("is confirmed" in subject for subject in await sink.subjects(bob_email))

    await eventually(mailed, "Bob's e-mail")
    assert await phones.texts(bob_phone) == []
    assert await in_app_kinds(notification, bob) == ["welcome", "order_confirmed"]


async def test_an_sms_twilio_refuses_is_dead_lettered_and_replayed_into_exactly_one_sms(
    start_service: StartService, sink: Sink, phones: Phones, kafka_bootstrap: str, topics: str
) -> None:
    cara, cara_email, cara_phone = new_id(), address("cara"), phone_number()
    chosen = preferences_changed(cara, order_updates=EMAIL_AND_SMS)
    await publish(
        kafka_bootstrap,
        topics,
        user_registered(cara, cara_email, "Cara Dune"),
        user_updated(cara, cara_email, "Cara Dune", phone=cara_phone),
        chosen,
    )
    notification = start_notification(start_service, sink, phones)
    await eventually(lambda: applied(notification, chosen), "Cara's preferences applied")

    # Twilio refuses the next SMS with a 400: it can never pass as it is.
    await phones.fail(400, count=1)
    order = new_id()
    await publish(kafka_bootstrap, topics, order_confirmed(order, cara))
    [dead] = await read_records(kafka_bootstrap, f"{topics}notification.dlq", 1)
    headers = dict(dead.headers)
    assert headers["dlq.error.type"] == b"SmsRefusedError"
    assert b"HTTP 400" in headers["dlq.error.message"]
    # The e-mail went out before the SMS failed; the SMS did not.
    assert [s for s in await sink.subjects(cara_email) if "is confirmed" in s] != []
    assert await phones.texts(cara_phone) == []
    deliveries = await deliveries_of(notification, cara, "order_confirmed")
    assert (deliveries["email"][0], deliveries["sms"][0]) == ("sent", "failed")

    # `choreo dlq replay ID`, twice: one SMS, and the e-mail is not sent again.
    entry = f"{topics}notification.dlq:{dead.partition}:{dead.offset}"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CHOREO_TOPIC_PREFIX": topics,
        "NOTIFICATION_DATABASE_URL": notification.database_url or "",
    }
    first = await replay(env, entry.removeprefix(topics))

    async def texted() -> bool:
        return bool(await phones.texts(cara_phone))

    await eventually(texted, "Cara's SMS after the replay")
    retry_topic = f"{topics}notification.retry"

    async def handled(outcomes: dict[str, int]) -> bool:
        return await records_handled(notification, retry_topic) == outcomes

    await eventually(lambda: handled({"applied": 1}), "the replay handled")
    second = await replay(env, entry.removeprefix(topics))
    assert (first["expect"], second["expect"]) == ("apply", "skip: already applied")
    await eventually(lambda: handled({"applied": 1, "duplicate": 1}), "the second replay skipped")
    [text] = await phones.texts(cara_phone)
    assert "is confirmed" in text
    assert len([s for s in await sink.subjects(cara_email) if "is confirmed" in s]) == 1
    deliveries = await deliveries_of(notification, cara, "order_confirmed")
    assert deliveries == {"email": ("sent", None), "sms": ("sent", None)}


async def replay(env: dict[str, str], entry: str) -> dict[str, Any]:
    """`choreo dlq replay ENTRY --json`, in-process: the entry's result."""
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["dlq", "replay", entry, "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    (entry_result,) = json.loads(result.stdout)["entries"]
    return dict(entry_result)


async def test_sms_chosen_without_a_phone_number_goes_by_email_and_says_so(
    start_service: StartService, sink: Sink, phones: Phones, kafka_bootstrap: str, topics: str
) -> None:
    dan, dan_email = new_id(), address("dan")
    chosen = preferences_changed(dan, order_updates=SMS_ONLY)
    await publish(kafka_bootstrap, topics, user_registered(dan, dan_email, "Dan Brown"), chosen)
    notification = start_notification(start_service, sink, phones)
    await eventually(lambda: applied(notification, chosen), "Dan's preferences applied")

    order = new_id()
    await publish(kafka_bootstrap, topics, order_confirmed(order, dan))

    async def mailed() -> bool:
        return any("is confirmed" in subject for subject in await sink.subjects(dan_email))

    await eventually(mailed, "Dan's e-mail instead of the SMS")

    async def both_recorded() -> bool:  # the SMS's skip is recorded after the e-mail is sent
        return {"email", "sms"} <= set(await deliveries_of(notification, dan, "order_confirmed"))

    await eventually(both_recorded, "the e-mail's and the skipped SMS's deliveries recorded")
    deliveries = await deliveries_of(notification, dan, "order_confirmed")
    assert deliveries["email"] == ("sent", None)
    status, reason = deliveries["sms"]
    assert status == "skipped"
    assert "no valid phone number" in reason
    assert "sent by e-mail instead" in reason
    assert await in_app_kinds(notification, dan) == ["welcome"]  # in-app stays off as chosen
