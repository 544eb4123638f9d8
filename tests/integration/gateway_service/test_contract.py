"""The merged OpenAPI document is a contract the gateway keeps: schemathesis generates requests
from it for the catalog's operations and sends them through the gateway to the real inventory
service; no answer is a 5xx, and every answer matches the document."""

from __future__ import annotations

import asyncio
import uuid

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error, response_schema_conformance

from choreo.auth import SigningKey
from choreo.testing import StartService

from .conftest import StartGateway, Upstreams

EXAMPLES_PER_OPERATION = 15


def check_operations(gateway_url: str, token: str, product_id: str) -> tuple[list[str], list[str]]:
    """Runs schemathesis on the catalog's operations (blocking); the operations checked, and
    what failed. Reads and changes of one product go to `product_id` half of the time (random
    ids are all unknown ones); it is never deleted."""
    schema = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json").include(
        path_regex=r"^/api/v1/products"
    )
    checked: list[str] = []
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        headers = {"Authorization": f"Bearer {token}"}
        strategy = operation.as_strategy(headers=headers)
        if "{product_id}" in operation.path and operation.method.upper() != "DELETE":
            existing = operation.as_strategy(
                headers=headers, path_parameters={"product_id": product_id}
            )
            strategy = st.one_of(existing, strategy)

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def call_and_check(case: schemathesis.Case) -> None:
            response = case.call(base_url=gateway_url, timeout=15)
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )

        checked.append(operation.label)
        try:
            call_and_check()
        except Exception as failure:
            failures.append(f"{operation.label}: {failure}")
    return checked, failures


async def test_the_catalog_keeps_the_merged_contract(
    start_service: StartService,
    upstreams: Upstreams,
    start_gateway: StartGateway,
    signing_key: SigningKey,
) -> None:
    inventory = start_service("inventory")
    gateway = await start_gateway(upstreams, INVENTORY_SERVICE_URL=inventory.url)
    admin = signing_key.issue(str(uuid.uuid4()), roles=["admin", "user"])
    async with gateway.client(admin) as api:
        created = await api.post(
            "/api/v1/products",
            json={"name": "Kettle", "category": "kitchen", "price": 5900, "stock": 10},
        )
    assert created.status_code == 201, created.text

    checked, failures = await asyncio.to_thread(
        check_operations, gateway.url, admin, created.json()["id"]
    )

    assert set(checked) >= {
        "GET /api/v1/products",
        "POST /api/v1/products",
        "POST /api/v1/products/lookup",
        "GET /api/v1/products/{product_id}",
        "PATCH /api/v1/products/{product_id}",
        "DELETE /api/v1/products/{product_id}",
        "POST /api/v1/products/{product_id}/stock",
    }
    assert not failures, "\n\n".join(failures)
