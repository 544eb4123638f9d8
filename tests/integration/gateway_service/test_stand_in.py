"""The gateway's stand-in services (conftest's `StandIn`) answer what the gateway asks of an
upstream as the real services do: the same requests, sent to a stand-in and to the real
inventory and user services, get the same status codes and JSON fields of the same types.

What the gateway asks of an upstream: `/healthz` (its probe and readiness), `/openapi.json`
(the merged document; outside dev for the ops token's holders only), the user service's JWKS
(token keys), and the error envelope of an answer it passes on. The stand-ins' own test hooks
(the echo, `/slow`, `/moved`) have no counterpart in a real service.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from choreo.auth import SigningKey
from choreo.testing import StartService

from .conftest import StandIn

OPS_TOKEN = "ops-token-of-the-stand-in-contract-0123456789"


def shape(value: Any) -> Any:
    """The JSON fields of `value` and their types, at every level (a list by its first item)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def document_shape(document: dict[str, Any]) -> dict[str, Any]:
    """What the gateway reads of an OpenAPI document: its top-level members and their types,
    and each operation's members it merges (`responses`, and `$ref`s into the components)."""
    operations = [
        operation
        for item in document["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict)
    ]
    schemas = document.get("components", {}).get("schemas", {})
    return {
        "members": {key: type(value).__name__ for key, value in document.items()},
        "info": sorted(document["info"]),
        "every operation answers": all(isinstance(o.get("responses"), dict) for o in operations),
        "every $ref resolves": all(ref.rpartition("/")[2] in schemas for ref in refs(document)),
    }


def refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return own + [ref for item in value.values() for ref in refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in refs(item)]
    return []


async def answer(url: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as client:
        return await client.get(path, headers=headers or {})


async def test_a_stand_in_answers_the_gateways_requests_as_a_real_service_does(
    start_service: StartService, signing_key: SigningKey
) -> None:
    real_inventory, real_user = start_service("inventory"), start_service("user")
    inventory, user = StandIn("inventory"), StandIn("user", signing_key.jwks())
    await inventory.start()
    await user.start()
    try:
        for real, stand_in in [(real_inventory, inventory), (real_user, user)]:
            real_health = await answer(real.url, "/healthz")
            stand_in_health = await answer(stand_in.url, "/healthz")
            assert (stand_in_health.status_code, stand_in_health.json()) == (
                real_health.status_code,
                real_health.json(),
            )

            real_document = await answer(real.url, "/openapi.json")
            stand_in_document = await answer(stand_in.url, "/openapi.json")
            assert real_document.status_code == stand_in_document.status_code == 200
            assert document_shape(stand_in_document.json()) == document_shape(real_document.json())

        # An error the gateway passes on: the envelope every service answers with.
        real_error = await answer(real_inventory.url, f"/api/v1/products/{uuid.uuid4()}")
        inventory.fail_next(real_error.status_code)
        stand_in_error = await answer(inventory.url, "/api/v1/products/anything")
        assert stand_in_error.status_code == real_error.status_code == 404
        assert shape(stand_in_error.json()) == shape(real_error.json())

        # The user service's key set, which the gateway verifies tokens with.
        real_keys = await answer(real_user.url, "/api/v1/auth/jwks")
        stand_in_keys = await answer(user.url, "/api/v1/auth/jwks")
        assert (stand_in_keys.status_code, stand_in_keys.json()) == (
            real_keys.status_code,
            real_keys.json(),
        )
        assert real_keys.json() == signing_key.jwks()
    finally:
        await inventory.stop()
        await user.stop()


async def test_outside_dev_a_stand_in_serves_its_document_to_the_ops_tokens_holders_only(
    start_service: StartService,
) -> None:
    real = start_service("inventory", CHOREO_ENV="prod", CHOREO_OPS_TOKEN=OPS_TOKEN)
    stand_in = StandIn("inventory")
    stand_in.ops_token = OPS_TOKEN
    await stand_in.start()
    try:
        for token in (None, "a-guess", OPS_TOKEN):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            from_real = await answer(real.url, "/openapi.json", headers)
            from_stand_in = await answer(stand_in.url, "/openapi.json", headers)
            assert from_stand_in.status_code == from_real.status_code, token
            assert from_real.status_code == (200 if token == OPS_TOKEN else 401)
            if from_real.status_code == 401:
                assert shape(from_stand_in.json()) == shape(from_real.json())
                assert from_stand_in.json()["error"]["code"] == from_real.json()["error"]["code"]
                challenge = [r.headers.get("www-authenticate") for r in (from_stand_in, from_real)]
                assert challenge == ["Bearer", "Bearer"]
    finally:
        await stand_in.stop()
