"""/readyz of a service with a database and a broker: not ready while a topic it writes or
reads is missing on the broker (an in-memory broker that restarted answers, but has none), and
ready again once the topic is back."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from choreo.kafka import ensure_topics
from choreo.testing import StartService


async def readiness(service: Any) -> tuple[int, dict[str, Any]]:
    async with service.client() as client:
        answer = await client.get("/readyz")
    return answer.status_code, answer.json()


async def test_a_service_is_not_ready_while_a_topic_it_uses_is_missing(
    start_service: StartService, kafka_bootstrap: str, topics: str
) -> None:
    inventory = start_service("inventory")
    assert (await readiness(inventory))[0] == 200

    retry_topic = f"{topics}inventory.retry"  # read by the inventory service alone
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([retry_topic])
    finally:
        await admin.close()
    for _ in range(50):
        status, body = await readiness(inventory)
        if status == 503:
            break
        await asyncio.sleep(0.2)
    assert status == 503, body
    assert body["checks"]["broker"] == (
        f"error: ChoreoError: topic(s) missing on the broker: {retry_topic}"
        " (`choreo topics --create` makes them)"
    )
    assert body["checks"]["database"] == "ok"

    await ensure_topics(kafka_bootstrap, [retry_topic], partitions=3)
    for _ in range(50):
        status, body = await readiness(inventory)
        if status == 200:
            break
        await asyncio.sleep(0.2)
    assert status == 200, body
