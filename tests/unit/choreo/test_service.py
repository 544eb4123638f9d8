"""What `Service` wires for a service's main.py: start-up hooks before it serves, periodic jobs
that survive a failing run, middleware outermost, a service's route replacing the kit's of the
same path, and typed resources."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response

from choreo.service import ConfigurationError, PeriodicJob, Service, _every
from choreo.settings import ServiceSettings


class EdgeSettings(ServiceSettings):
    service: ClassVar[str] = "edge"


def service(**wiring: object) -> Service:
    return Service(EdgeSettings(), **wiring)  # type: ignore[arg-type]


def test_start_up_hooks_run_before_the_service_serves() -> None:
    started: list[str] = []

    async def seed() -> None:
        started.append("seeded")

    router = APIRouter()

    @router.get("/seen")
    async def seen() -> list[str]:
        return started

    with TestClient(service(routers=[router], on_start=[seed]).app()) as client:
        assert client.get("/seen").json() == ["seeded"]


async def test_a_periodic_job_that_fails_runs_again_at_its_next_time() -> None:
    runs: list[int] = []
    stopping = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("the database is away")
        if len(runs) == 3:
            stopping.set()

    await asyncio.wait_for(_every(PeriodicJob("flaky", 0.01, flaky), stopping), 10)
    assert runs == [0, 1, 2]


def test_a_service_route_replaces_the_kits_route_of_the_same_path() -> None:
    router = APIRouter()

    @router.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"ready": "the service's own answer"}

    with TestClient(service(routers=[router]).app()) as client:
        assert client.get("/readyz").json() == {"ready": "the service's own answer"}
        assert client.get("/healthz").status_code == 200  # the kit's others stay


class Stamp(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: object) -> Response:
        response: Response = await call_next(request)  # type: ignore[operator]
        response.headers["X-Stamp"] = "outermost"
        return response


def test_middleware_wraps_the_kits_answers_too() -> None:
    with TestClient(service(middleware=[Middleware(Stamp)]).app()) as client:
        missing = client.get("/no-such-path")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert missing.headers["X-Stamp"] == "outermost"


def test_resources_are_typed_and_may_be_made_from_the_service() -> None:
    built = service(resources=lambda svc: {"name": f"made for {svc.name}"})
    assert built.resource("name", str) == "made for edge_service"
    with pytest.raises(ConfigurationError, match="no int resource named 'name'"):
        built.resource("name", int)


def test_a_service_without_a_database_has_no_independent_pool() -> None:
    with pytest.raises(ConfigurationError, match="has no database"):
        service().independent_unit_of_work()
