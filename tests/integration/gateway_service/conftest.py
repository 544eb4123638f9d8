"""The gateway run as a process in front of stand-in services that record what reaches them.

Each stand-in is a tiny HTTP server in the test's event loop: it answers `/healthz`, its own
`/openapi.json` (only to holders of its `ops_token`, when it has one, as a service outside dev
does), and echoes every other request (after the failures a test queued for it). The gateway's
readiness asks the stand-ins, so it is started from a thread, leaving the event loop free to
answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from choreo.auth import SigningKey
from choreo.testing import ServiceProcess, free_port, serving

SERVICES = ("user", "order", "payment", "inventory", "notification")
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass(frozen=True)
class Seen:
    """One request as a stand-in received it."""

    method: str
    path: str
    raw_path: str
    query: str
    headers: dict[str, str]
    body: bytes


def _schema(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


# Each stand-in's document: one routed path, one it serves that the gateway does not route,
# and an `Item` that means something different in the order and inventory services.
_DOCUMENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "user": ("/api/v1/users/me", {"Profile": {"type": "object"}}),
    "order": (
        "/api/v1/orders",
        {"Item": {"type": "object", "properties": {"quantity": {"type": "integer"}}}},
    ),
    "payment": ("/api/v1/payments", {"Payment": {"type": "object"}}),
    "inventory": (
        "/api/v1/products",
        {"Item": {"type": "object", "properties": {"sku": {"type": "string"}}}},
    ),
    "notification": ("/api/v1/notifications", {"Notification": {"type": "object"}}),
}


def stand_in_document(service: str) -> dict[str, Any]:
    path, schemas = _DOCUMENTS[service]
    (schema,) = schemas
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{service}_service", "version": "0.1.0"},
        "paths": {
            path: {
                "get": {
                    "operationId": f"list_{service}",
                    "responses": {"200": _ok(_schema(schema))},
                }
            },
            "/internal/stats": {"get": {"responses": {"200": _ok({"type": "object"})}}},
        },
        "components": {"schemas": schemas},
    }


class StandIn:
    """One service's stand-in: records requests; `fail_next` queues error answers; a request
    whose path ends in `/slow` is answered after `slow_seconds`; one whose path ends in `/moved`
    is redirected to the path without it, by an absolute URL on the stand-in's own address (as
    FastAPI's redirect_slashes did), its `Content-Location` naming that address too.

    What the gateway asks of an upstream, it answers as the real services do (test_stand_in.py
    holds it to them)."""

    def __init__(self, service: str, jwks: dict[str, Any] | None = None) -> None:
        self.service = service
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.seen: list[Seen] = []
        self.slow_seconds = 0.0
        self.ops_token: str | None = None
        self._jwks = jwks
        self._failures: list[int] = []
        self._server = contextlib.AsyncExitStack()

    def fail_next(self, status: int, times: int = 1) -> None:
        self._failures += [status] * times

    def hits(self, path: str, method: str | None = None) -> int:
        return sum(1 for s in self.seen if s.path == path and method in (None, s.method))

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "service": f"{self.service}_service"})

    async def _openapi(self, request: Request) -> Response:
        if self.ops_token and request.headers.get("authorization") != f"Bearer {self.ops_token}":
            refusal = {"code": "unauthenticated", "message": "send the ops token", "details": None}
            return JSONResponse(
                {"error": refusal}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return JSONResponse(stand_in_document(self.service))

    async def _echo(self, request: Request) -> Response:
        seen = Seen(
            method=request.method,
            path=request.url.path,
            raw_path=request.scope["raw_path"].decode(),
            query=request.scope["query_string"].decode(),
            headers={name: value for name, value in request.headers.items()},
            body=await request.body(),
        )
        self.seen.append(seen)
        if self._jwks is not None and seen.path == "/api/v1/auth/jwks":
            return JSONResponse(self._jwks)
        if seen.path.endswith("/slow"):
            await asyncio.sleep(self.slow_seconds)
        if seen.path.endswith("/moved"):
            target = f"{self.url}{seen.path.removesuffix('/moved')}"
            return Response(
                status_code=307,
                headers={
                    "Location": f"{target}?{seen.query}" if seen.query else target,
                    "Content-Location": f"{self.url}/api/v1/{self.service}/moved",
                },
            )
        if self._failures:
            status = self._failures.pop(0)
            return JSONResponse(
                {"error": {"code": "stand_in_failure", "message": str(status), "details": None}},
                status_code=status,
            )
        return JSONResponse(
            {"service": self.service, "method": seen.method, "path": seen.path},
            headers={"Location": f"/api/v1/{self.service}/echo"},
        )

    async def start(self) -> None:
        app = Starlette(
            routes=[
                Route("/healthz", self._healthz),
                Route("/openapi.json", self._openapi),
                Route("/{path:path}", self._echo, methods=METHODS),
            ]
        )
        await self._server.enter_async_context(serving(app, port=self.port))

    async def stop(self) -> None:
        await self._server.aclose()


Upstreams = dict[str, StandIn]
StartGateway = Callable[..., Awaitable[ServiceProcess]]


@contextlib.asynccontextmanager
async def running_upstreams(signing_key: SigningKey) -> AsyncIterator[Upstreams]:
    """A running stand-in for each of the five services (the user one serves the JWKS)."""
    stand_ins = {
        service: StandIn(service, signing_key.jwks() if service == "user" else None)
        for service in SERVICES
    }
    try:
        await asyncio.gather(*(stand_in.start() for stand_in in stand_ins.values()))
        yield stand_ins
    finally:
        await asyncio.gather(*(stand_in.stop() for stand_in in stand_ins.values()))


@contextlib.asynccontextmanager
async def gateway_starter(signing_key: SigningKey) -> AsyncIterator[StartGateway]:
    """`await start(upstreams, GATEWAY_X="1")` starts a gateway in front of `upstreams`; each
    is stopped on the way out.

    A gateway trusts the test's signing key, keeps its limits in memory and allows plenty of
    requests, unless the keyword arguments (environment variables) say otherwise.
    """
    started: list[ServiceProcess] = []

    async def start(upstreams: Upstreams, **environment: str) -> ServiceProcess:
        env = {
            **os.environ,
            "CHOREO_ENV": "test",
            "JWT_JWKS": json.dumps(signing_key.jwks()),
            "REDIS_URL": "",
            "GATEWAY_RATE_LIMIT_PER_SECOND": "1000",
            "GATEWAY_RATE_LIMIT_BURST": "1000",
            "GATEWAY_ADDRESS_RATE_LIMIT_PER_SECOND": "1000",
            "GATEWAY_ADDRESS_RATE_LIMIT_BURST": "1000",
            **{f"{name.upper()}_SERVICE_URL": s.url for name, s in upstreams.items()},
            **environment,
        }
        gateway = ServiceProcess("gateway", env)
        started.append(gateway)
        await asyncio.to_thread(gateway.start)
        return gateway

    try:
        yield start
    finally:
        for gateway in reversed(started):
            await asyncio.to_thread(gateway.stop)


@pytest_asyncio.fixture
async def upstreams(signing_key: SigningKey) -> AsyncIterator[Upstreams]:
    async with running_upstreams(signing_key) as stand_ins:
        yield stand_ins


@pytest_asyncio.fixture
async def start_gateway(signing_key: SigningKey) -> AsyncIterator[StartGateway]:
    async with gateway_starter(signing_key) as start:
        yield start


ORIGIN = "https://shop.example"


@dataclass(frozen=True)
class Front:
    """A gateway in front of stand-ins, shared by the tests that only send requests through."""

    gateway: ServiceProcess
    upstreams: Upstreams


@pytest_asyncio.fixture(scope="package")
async def front(signing_key: SigningKey) -> AsyncIterator[Front]:
    """CORS for ORIGIN, HSTS on, and (as in production) keys fetched from the user service's
    JWKS rather than given."""
    async with running_upstreams(signing_key) as stand_ins, gateway_starter(signing_key) as start:
        gateway = await start(
            stand_ins,
            JWT_JWKS="",
            GATEWAY_CORS_ORIGINS=f"{ORIGIN},http://localhost:3000",
            GATEWAY_HSTS="true",
        )
        yield Front(gateway, stand_ins)
