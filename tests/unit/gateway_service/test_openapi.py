"""Merging the services' OpenAPI documents into the public one."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway_service.domain import is_public, owns_path
from gateway_service.openapi import ENVELOPE, ApiCatalog, merge_specs

GATEWAY_OWN: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "gateway_service", "version": "0.1.0"},
    "paths": {},
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def answer(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


VALIDATION_ERROR = {
    "description": "Validation Error",
    "content": {"application/json": {"schema": ref("HTTPValidationError")}},
}
FASTAPI_ERRORS = {
    "HTTPValidationError": {
        "type": "object",
        "properties": {"detail": {"type": "array", "items": ref("ValidationError")}},
    },
    "ValidationError": {"type": "object", "properties": {"msg": {"type": "string"}}},
}


def inventory_spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "inventory_service", "version": "0.1.0"},
        "paths": {
            "/api/v1/products": {
                "get": {
                    "operationId": "list_products",
                    "responses": {"200": answer(ref("Page")), "422": VALIDATION_ERROR},
                },
                "post": {
                    "operationId": "create_product",
                    "requestBody": {"content": {"application/json": {"schema": ref("Item")}}},
                    "responses": {"201": answer(ref("Item")), "422": VALIDATION_ERROR},
                },
            },
            # Served by the service, but not routed to it by the gateway: left out.
            "/api/v1/orders": {"get": {"responses": {"200": answer({"type": "object"})}}},
            "/internal/reindex": {"post": {"responses": {"200": answer({"type": "object"})}}},
        },
        "components": {
            "schemas": {
                "Item": {"type": "object", "properties": {"sku": {"type": "string"}}},
                "Page": {"type": "object", "properties": {"items": {"items": ref("Item")}}},
                "Money": {"type": "object", "properties": {"amount": {"type": "integer"}}},
                "Unused": {"type": "string"},
                **FASTAPI_ERRORS,
            }
        },
    }


def order_spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "order_service", "version": "0.1.0"},
        "paths": {
            "/api/v1/orders": {
                "post": {
                    "operationId": "place_order",
                    "responses": {"202": answer(ref("Item")), "422": VALIDATION_ERROR},
                }
            },
            "/api/v1/orders/{order_id}": {
                "get": {
                    "operationId": "get_order",
                    "parameters": [{"name": "order_id", "in": "path", "required": True}],
                    "responses": {"200": answer(ref("Page"))},
                }
            },
        },
        "components": {
            "schemas": {
                # Same name as the inventory's, different meaning.
                "Item": {"type": "object", "properties": {"quantity": {"type": "integer"}}},
                # Same text as the inventory's, but its `Item` is the order's.
                "Page": {"type": "object", "properties": {"items": {"items": ref("Item")}}},
                # Identical in both services: one definition, its name unchanged.
                "Money": {"type": "object", "properties": {"amount": {"type": "integer"}}},
                **FASTAPI_ERRORS,
            }
        },
    }


def merged() -> dict[str, Any]:
    return merge_specs(
        GATEWAY_OWN,
        {"inventory": inventory_spec(), "order": order_spec()},
        owns_path=owns_path,
        is_public=is_public,
    )


def test_paths_are_the_api_paths_each_service_is_routed() -> None:
    spec = merged()
    assert set(spec["paths"]) == {
        "/api/v1/products",
        "/api/v1/orders",
        "/api/v1/orders/{order_id}",
    }
    assert set(spec["paths"]["/api/v1/orders"]) == {"post"}  # the order service's
    assert spec["openapi"] == "3.1.0"
    assert spec["info"]["title"] == "Choreo API"


def test_colliding_names_are_prefixed_with_the_service_and_references_follow() -> None:
    spec = merged()
    schemas = spec["components"]["schemas"]
    assert schemas["inventory_Item"]["properties"] == {"sku": {"type": "string"}}
    assert schemas["order_Item"]["properties"] == {"quantity": {"type": "integer"}}
    assert "Item" not in schemas
    # `Page` reads the same in both, but refers to each service's own `Item`.
    assert schemas["inventory_Page"]["properties"]["items"]["items"] == ref("inventory_Item")
    assert schemas["order_Page"]["properties"]["items"]["items"] == ref("order_Item")
    assert "Page" not in schemas

    products = spec["paths"]["/api/v1/products"]
    assert products["get"]["responses"]["200"]["content"]["application/json"]["schema"] == ref(
        "inventory_Page"
    )
    assert products["post"]["requestBody"]["content"]["application/json"]["schema"] == ref(
        "inventory_Item"
    )
    order = spec["paths"]["/api/v1/orders/{order_id}"]["get"]
    assert order["responses"]["200"]["content"]["application/json"]["schema"] == ref("order_Page")


def test_every_reference_resolves_and_unused_components_are_dropped() -> None:
    spec = merged()
    schemas = spec["components"]["schemas"]
    assert "Unused" not in schemas
    assert "Money" not in schemas  # identical in both services, but no path uses it
    # The services answer 422 with the envelope: FastAPI's validation shapes are not used.
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas

    def references(value: Any) -> list[str]:
        if isinstance(value, dict):
            found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
            return found + [r for v in value.values() for r in references(v)]
        if isinstance(value, list):
            return [r for v in value for r in references(v)]
        return []

    for reference in references(spec):
        section, name = reference.removeprefix("#/components/").split("/")
        assert name in spec["components"][section], reference


def test_identical_definitions_keep_their_name() -> None:
    inventory, order = inventory_spec(), order_spec()
    order["paths"]["/api/v1/orders"]["post"]["responses"]["202"] = answer(ref("Money"))
    inventory["paths"]["/api/v1/products"]["get"]["responses"]["200"] = answer(ref("Money"))
    spec = merge_specs(
        GATEWAY_OWN,
        {"inventory": inventory, "order": order},
        owns_path=owns_path,
        is_public=is_public,
    )
    assert spec["components"]["schemas"]["Money"] == inventory["components"]["schemas"]["Money"]
    assert not any(name.endswith("_Money") for name in spec["components"]["schemas"])


def test_security_and_the_gateways_own_answers_are_described() -> None:
    spec = merged()
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    envelope = {"application/json": {"schema": ref(ENVELOPE)}}
    assert spec["components"]["schemas"][ENVELOPE]["required"] == ["error"]

    catalog = spec["paths"]["/api/v1/products"]["get"]
    assert catalog["security"] == [{}, {"bearerAuth": []}]  # public; a token is optional
    assert "401" not in catalog["responses"]
    assert catalog["responses"]["422"]["content"] == envelope

    create = spec["paths"]["/api/v1/products"]["post"]
    assert create["security"] == [{"bearerAuth": []}]
    for status in ("401", "429", "502", "503", "504"):
        assert create["responses"][status]["content"] == envelope
    assert "Retry-After" in create["responses"]["429"]["headers"]
    assert "Retry-After" in create["responses"]["503"]["headers"]


def test_a_service_defining_the_envelope_name_differently_keeps_its_own() -> None:
    inventory = inventory_spec()
    inventory["components"]["schemas"][ENVELOPE] = {"type": "string"}
    inventory["paths"]["/api/v1/products"]["get"]["responses"]["200"] = answer(ref(ENVELOPE))
    spec = merge_specs(
        GATEWAY_OWN, {"inventory": inventory}, owns_path=owns_path, is_public=is_public
    )
    schemas = spec["components"]["schemas"]
    get = spec["paths"]["/api/v1/products"]["get"]
    assert get["responses"]["200"]["content"]["application/json"]["schema"] == ref(
        f"inventory_{ENVELOPE}"
    )
    assert schemas[f"inventory_{ENVELOPE}"] == {"type": "string"}
    gateway_envelope = get["responses"]["429"]["content"]["application/json"]["schema"]
    assert gateway_envelope == ref(f"gateway_{ENVELOPE}")
    assert schemas[f"gateway_{ENVELOPE}"]["required"] == ["error"]


def test_the_inputs_are_not_changed() -> None:
    inventory = inventory_spec()
    merge_specs(GATEWAY_OWN, {"inventory": inventory}, owns_path=owns_path, is_public=is_public)
    assert inventory == inventory_spec()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_catalog_caches_and_keeps_a_down_services_last_document() -> None:
    documents = {"inventory": inventory_spec(), "order": order_spec()}
    down: set[str] = set()
    fetched: list[str] = []

    def serve(request: httpx.Request) -> httpx.Response:
        service = request.url.host
        fetched.append(service)
        if service in down:
            return httpx.Response(503, json={"error": {"code": "down"}})
        return httpx.Response(200, json=documents[service])

    clock = FakeClock()
    async with httpx.AsyncClient(transport=httpx.MockTransport(serve)) as client:
        catalog = ApiCatalog(
            client,
            {"inventory": "http://inventory", "order": "http://order", "user": "http://user"},
            owns_path=owns_path,
            is_public=is_public,
            clock=clock,
        )
        down.add("user")  # never answered: left out, and said so
        first = await catalog.document(GATEWAY_OWN)
        assert first["x-unavailable"].keys() == {"user"}
        assert "/api/v1/orders" in first["paths"]
        assert sorted(fetched) == ["inventory", "order", "user"]

        clock.now = 59.0
        assert await catalog.document(GATEWAY_OWN) is first  # cached, nothing fetched
        assert len(fetched) == 3

        down.add("order")
        clock.now = 60.0
        second = await catalog.document(GATEWAY_OWN)
        assert len(fetched) == 6
        assert "/api/v1/orders" in second["paths"]  # the order service's last good document
        assert second["x-unavailable"].keys() == {"user"}


@pytest.mark.parametrize(
    "answer_of_service",
    [
        httpx.Response(200, text="not json"),
        httpx.Response(200, json=["not", "a", "document"]),
        httpx.Response(500, text="boom"),
    ],
)
async def test_a_service_with_no_usable_document_is_left_out(
    answer_of_service: httpx.Response,
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: answer_of_service)
    ) as client:
        catalog = ApiCatalog(
            client, {"order": "http://order"}, owns_path=owns_path, is_public=is_public
        )
        spec = await catalog.document(GATEWAY_OWN)
    assert spec["paths"] == {}
    assert "order" in spec["x-unavailable"]


async def test_the_catalog_fetches_with_the_ops_token_services_ask_for_outside_dev() -> None:
    token = "ops-token-of-the-tests-0123456789abcdef"
    seen: list[str | None] = []

    def serve(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != f"Bearer {token}":
            return httpx.Response(401, json={"error": {"code": "unauthenticated"}})
        return httpx.Response(200, json=order_spec())

    async with httpx.AsyncClient(transport=httpx.MockTransport(serve)) as client:
        without = ApiCatalog(
            client, {"order": "http://order"}, owns_path=owns_path, is_public=is_public
        )
        assert "order" in (await without.document(GATEWAY_OWN))["x-unavailable"]
        catalog = ApiCatalog(
            client,
            {"order": "http://order"},
            owns_path=owns_path,
            is_public=is_public,
            ops_token=token,
        )
        spec = await catalog.document(GATEWAY_OWN)
    assert "/api/v1/orders" in spec["paths"]
    assert "x-unavailable" not in spec
    assert seen == [None, f"Bearer {token}"]
