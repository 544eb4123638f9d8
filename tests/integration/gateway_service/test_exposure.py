"""What the gateway never hands out: a service's internal address (a redirect the service made),
and the operational endpoints (metrics, the services' own API documents) to whoever asks."""

from __future__ import annotations

import uuid

import httpx

from choreo.auth import SigningKey
from choreo.testing import StartService

from .conftest import Front, StartGateway, Upstreams

OPS_TOKEN = "ops-token-of-the-gateway-tests-0123456789"
ROUTED_PATHS = {
    "/api/v1/users/me",
    "/api/v1/orders",
    "/api/v1/payments",
    "/api/v1/products",
    "/api/v1/notifications",
}


def addresses_of(upstreams: Upstreams) -> list[str]:
    return [f"127.0.0.1:{stand_in.port}" for stand_in in upstreams.values()]


def leaks(response: httpx.Response, addresses: list[str]) -> list[str]:
    """The internal addresses the response shows its client, in its headers or body."""
    shown = response.text + "".join(f"{k}: {v}\n" for k, v in response.headers.items())
    return [address for address in addresses if address in shown]


async def test_a_services_redirect_names_the_gateways_path_never_the_service(
    front: Front, signing_key: SigningKey
) -> None:
    token = signing_key.issue(str(uuid.uuid4()))
    async with front.gateway.client(token) as api:
        moved = await api.get("/api/v1/orders/o-1/moved", params={"limit": "5"})
        failing = await api.get("/api/v1/products/p-1/moved")

    assert moved.status_code == 307
    assert moved.headers["location"] == "/api/v1/orders/o-1?limit=5"
    assert moved.headers["content-location"] == "/api/v1/order/moved"
    assert failing.headers["location"] == "/api/v1/products/p-1"
    assert leaks(moved, addresses_of(front.upstreams)) == []
    assert leaks(failing, addresses_of(front.upstreams)) == []


async def test_a_trailing_slash_is_a_404_naming_the_path_never_a_redirect(
    start_service: StartService, upstreams: Upstreams, start_gateway: StartGateway
) -> None:
    # The security review's request: FastAPI's redirect_slashes answered it with
    # `307 Location: http://127.0.0.1:<inventory port>/api/v1/products`.
    inventory = start_service("inventory")
    gateway = await start_gateway(upstreams, INVENTORY_SERVICE_URL=inventory.url)
    internal = f"127.0.0.1:{inventory.port}"
    async with gateway.client() as api:
        slashed = await api.get("/api/v1/products/")
        catalog = await api.get("/api/v1/products")
    async with inventory.client() as direct:
        asked_directly = await direct.get("/api/v1/products/")

    for response in (slashed, asked_directly):
        assert response.status_code == 404, response.text
        assert "location" not in response.headers
        assert response.json()["error"] == {
            "code": "not_found",
            "message": "There is no /api/v1/products/; the path is /api/v1/products.",
            "details": None,
        }
    assert leaks(slashed, [internal]) == []
    assert catalog.status_code == 200


async def test_in_production_operational_endpoints_need_the_ops_token(
    start_service: StartService, upstreams: Upstreams, start_gateway: StartGateway
) -> None:
    inventory = start_service("inventory", CHOREO_ENV="prod", CHOREO_OPS_TOKEN=OPS_TOKEN)
    for stand_in in upstreams.values():
        stand_in.ops_token = OPS_TOKEN  # each serves its document to the token's holders only
    gateway = await start_gateway(
        upstreams,
        CHOREO_ENV="prod",
        CHOREO_OPS_TOKEN=OPS_TOKEN,
        INVENTORY_SERVICE_URL=inventory.url,
    )
    operator = {"Authorization": f"Bearer {OPS_TOKEN}"}
    async with gateway.client() as anyone:
        metrics = [
            await anyone.get("/metrics"),
            await anyone.get("/metrics", headers={"Authorization": "Bearer guess"}),
        ]
        scraped = await anyone.get("/metrics", headers=operator)
        contract = await anyone.get("/openapi.json")
        docs = await anyone.get("/docs")
    async with inventory.client() as direct:
        service_metrics = await direct.get("/metrics")
        service_scraped = await direct.get("/metrics", headers=operator)
        pages = [await direct.get(path) for path in ("/docs", "/redoc")]
        service_document = await direct.get("/openapi.json")
        merged_from = await direct.get("/openapi.json", headers=operator)

    for refused in (*metrics, service_metrics, service_document):
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "unauthenticated"
        assert refused.headers["www-authenticate"] == "Bearer"
    assert scraped.status_code == 200
    assert "gateway_upstream_circuit_open" in scraped.text
    assert service_scraped.status_code == 200
    assert "http_requests_total" in service_scraped.text
    assert [page.status_code for page in pages] == [404, 404]
    assert merged_from.status_code == 200

    # The public contract stays public, merged from documents fetched with the token.
    assert contract.status_code == 200
    spec = contract.json()
    assert "x-unavailable" not in spec
    assert set(spec["paths"]) >= ROUTED_PATHS | {"/api/v1/products/{product_id}"}
    assert docs.status_code == 200


async def test_the_gateways_metrics_are_rate_limited_like_any_public_route(
    upstreams: Upstreams, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(
        upstreams,
        CHOREO_OPS_TOKEN=OPS_TOKEN,
        GATEWAY_TRUST_FORWARDED="true",
        GATEWAY_ADDRESS_RATE_LIMIT_PER_SECOND="0.1",
        GATEWAY_ADDRESS_RATE_LIMIT_BURST="3",
    )
    crowded = {"X-Forwarded-For": "10.0.0.9"}
    async with gateway.client() as scanner:
        answers = [await scanner.get("/metrics", headers=crowded) for _ in range(4)]
        scraper = await scanner.get(
            "/metrics",
            headers={"Authorization": f"Bearer {OPS_TOKEN}", "X-Forwarded-For": "10.0.0.8"},
        )
    assert [answer.status_code for answer in answers] == [401, 401, 401, 429]
    assert answers[-1].json()["error"]["code"] == "rate_limited"
    assert scraper.status_code == 200
