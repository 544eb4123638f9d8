"""The app factory: probes, metrics, the error envelope, request ids and trace context."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from prometheus_client import REGISTRY, Counter
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError

from choreo.logs import LogFormat, configure_logging, note_published
from choreo.web import (
    ApiDocs,
    ApiError,
    ReadinessCheck,
    create_app,
    current_request_id,
    current_traceparent,
)

OPS_TOKEN = "ops-token-of-the-tests-0123456789abcdef"
TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
CALLER_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class OrderError(Exception):
    pass


class OutOfStockError(OrderError):
    pass


class NewAccount(BaseModel):
    email: str
    password: str = Field(min_length=20)


def build_router() -> APIRouter:
    router = APIRouter()
    lines = APIRouter(prefix="/lines")

    @router.get("/orders/{order_id}")
    async def get_order(order_id: uuid.UUID) -> dict[str, str]:
        logging.getLogger("order_service.api").info("looking up order %s", order_id)
        return {"id": str(order_id)}

    @lines.get("/{line_id}")
    async def get_line(line_id: int) -> dict[str, int]:
        return {"id": line_id}

    router.include_router(lines, prefix="/orders/{order_id}")

    @router.post("/accounts", status_code=201)
    async def register(account: NewAccount) -> dict[str, str]:
        return {"email": account.email}

    @router.post("/tallies")
    async def tally(counts: dict[str, int]) -> int:
        return sum(counts.values())

    @router.post("/orders/{order_id}/cancel")
    async def cancel(order_id: str) -> None:
        raise ApiError(
            409,
            "order_not_cancellable",
            "the order is already confirmed",
            details={"status": "CONFIRMED"},
            headers={"Retry-After": "5"},
        )

    @router.get("/reservations")
    async def reserve() -> None:
        raise OutOfStockError("product p-1 has 0 available")

    @router.get("/orders-any")
    async def order_error() -> None:
        raise OrderError("the order is in an impossible state")

    @router.get("/forbidden")
    async def forbidden() -> None:
        raise HTTPException(403, detail="admins only")

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("connection to postgres://choreo:s3cr3t@db failed")

    @router.post("/orders")
    async def place() -> None:
        # What psycopg raises through SQLAlchemy when PostgreSQL refuses the connection.
        raise OperationalError(
            "connect", {}, psycopg.OperationalError("connection refused: s3cr3t@db")
        )

    @router.post("/orders/{order_id}/confirm", status_code=202)
    async def confirm(order_id: str) -> None:
        note_published(["OrderConfirmed"])  # as the outbox writer does in a unit of work

    @router.get("/context")
    async def context() -> dict[str, str | None]:
        return {"request_id": current_request_id(), "traceparent": current_traceparent()}

    @router.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for number in range(3):
                yield f"chunk {number}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    return router


def build_app(
    readiness: dict[str, ReadinessCheck] | None = None,
    readiness_timeout: float = 2.0,
    *,
    ops_token: str | None = None,
    docs: ApiDocs = ApiDocs.PUBLIC,
) -> FastAPI:
    return create_app(
        "order_service",
        readiness=readiness,
        routers=[build_router()],
        error_statuses={OrderError: (500, "order_error"), OutOfStockError: (409, "out_of_stock")},
        readiness_timeout=readiness_timeout,
        ops_token=ops_token,
        docs=docs,
    )


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(build_app()) as client:
        yield client


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    error: dict[str, Any] = body["error"]
    return error


def is_uuid4(value: str) -> bool:
    try:
        return uuid.UUID(value).version == 4
    except ValueError:
        return False


# Probes


async def test_healthz_says_alive_and_names_the_service(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "order_service"}


async def test_readyz_is_ready_when_every_check_passes() -> None:
    async def reachable() -> None:
        pass

    app = build_app({"database": reachable, "broker": reachable})
    async with client_for(app) as client:
        response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


async def test_readyz_names_the_check_that_raised() -> None:
    async def reachable() -> None:
        pass

    async def refused() -> None:
        raise ConnectionRefusedError("connection refused\nat 127.0.0.1:54320")

    app = build_app({"database": refused, "broker": reachable})
    async with client_for(app) as client:
        response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "not ready",
        "checks": {"database": "error: ConnectionRefusedError: connection refused", "broker": "ok"},
    }


async def test_readyz_gives_up_on_a_check_that_hangs() -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    async def reachable() -> None:
        pass

    app = build_app({"broker": hangs, "database": reachable}, readiness_timeout=0.05)
    async with client_for(app) as client:
        response = await client.get("/readyz")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["broker"].startswith("error: timed out")


async def test_readyz_runs_the_checks_concurrently() -> None:
    # Each check waits for the other to start: run one after the other, both would time out.
    database_started, broker_started = asyncio.Event(), asyncio.Event()

    async def database() -> None:
        database_started.set()
        await broker_started.wait()

    async def broker() -> None:
        broker_started.set()
        await database_started.wait()

    app = build_app({"database": database, "broker": broker}, readiness_timeout=1.0)
    async with client_for(app) as client:
        response = await client.get("/readyz")

    assert response.status_code == 200


# Metrics


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    order_id = uuid.uuid4()
    await client.get(f"/orders/{order_id}")
    await client.get(f"/orders/{uuid.uuid4()}")
    await client.get(f"/orders/{order_id}/lines/7")
    await client.get("/no/such/route")

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'http_requests_total{method="GET",route="/orders/{order_id}",status="200"} 2.0' in text
    assert (
        'http_requests_total{method="GET",route="/orders/{order_id}/lines/{line_id}",'
        'status="200"} 1.0'
    ) in text
    assert 'http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'http_request_duration_seconds_bucket{le="0.005",method="GET",route="/orders/' in text
    assert str(order_id) not in text


async def test_metrics_include_the_default_registry_and_process_metrics(
    client: httpx.AsyncClient,
) -> None:
    relayed = Counter("test_web_relayed_events", "Events a relay published (test).")
    relayed.inc(3)
    try:
        text = (await client.get("/metrics")).text
    finally:
        REGISTRY.unregister(relayed)

    assert "test_web_relayed_events_total 3.0" in text
    assert "process_cpu_seconds_total" in text


async def test_metrics_speak_openmetrics_when_asked(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )

    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


async def test_with_an_ops_token_metrics_are_for_its_holders_only() -> None:
    async with client_for(build_app(ops_token=OPS_TOKEN)) as client:
        anonymous = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        not_bearer = await client.get("/metrics", headers={"Authorization": f"Basic {OPS_TOKEN}"})
        odd_bytes = await client.get("/metrics", headers=[(b"Authorization", b"Bearer caf\xe9")])
        holder = await client.get("/metrics", headers={"Authorization": f"Bearer {OPS_TOKEN}"})

    for refused in (anonymous, wrong, not_bearer, odd_bytes):
        assert refused.status_code == 401
        assert error_of(refused)["code"] == "unauthenticated"
        assert "CHOREO_OPS_TOKEN" in error_of(refused)["message"]
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "http_requests_total" not in refused.text
    assert holder.status_code == 200
    assert "http_requests_total" in holder.text


async def test_public_docs_are_fastapis_pages_and_document(client: httpx.AsyncClient) -> None:
    for path in ("/docs", "/redoc"):
        assert (await client.get(path)).status_code == 200
    document = await client.get("/openapi.json")
    assert document.status_code == 200
    assert "/orders/{order_id}" in document.json()["paths"]


async def test_internal_docs_are_the_document_for_ops_token_holders_only() -> None:
    async with client_for(build_app(ops_token=OPS_TOKEN, docs=ApiDocs.INTERNAL)) as client:
        pages = [await client.get(path) for path in ("/docs", "/redoc", "/docs/oauth2-redirect")]
        anonymous = await client.get("/openapi.json")
        holder = await client.get("/openapi.json", headers={"Authorization": f"Bearer {OPS_TOKEN}"})

    assert [page.status_code for page in pages] == [404, 404, 404]
    assert anonymous.status_code == 401
    assert "paths" not in anonymous.text
    assert holder.status_code == 200
    assert "/orders/{order_id}" in holder.json()["paths"]
    assert "/openapi.json" not in holder.json()["paths"]


async def test_an_app_with_docs_of_its_own_gets_none_from_the_kit() -> None:
    app = build_app(docs=ApiDocs.NONE)
    async with client_for(app) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await client.get(path)).status_code == 404
    assert "/orders/{order_id}" in app.openapi()["paths"]  # for the app to describe itself


def test_internal_docs_without_an_ops_token_are_refused() -> None:
    with pytest.raises(ValueError, match="ops token"):
        build_app(docs=ApiDocs.INTERNAL)


# No redirects


@pytest.mark.parametrize("path", ["/orders/{id}/", "/healthz/", "/orders/{id}/lines/7/"])
async def test_a_trailing_slash_is_a_404_naming_the_path_never_a_redirect(
    client: httpx.AsyncClient, path: str
) -> None:
    order_id = uuid.uuid4()
    asked = path.format(id=order_id)

    response = await client.get(asked, headers={"Host": "10.0.0.7:8002"})

    assert response.status_code == 404
    assert "location" not in response.headers
    error = error_of(response)
    assert error["code"] == "not_found"
    assert error["message"] == f"There is no {asked}; the path is {asked.rstrip('/')}."
    assert "10.0.0.7" not in response.text


async def test_a_trailing_slash_on_no_route_is_a_plain_404(client: httpx.AsyncClient) -> None:
    for path in ("/no/such/route/", "/"):
        response = await client.get(path)
        assert response.status_code == 404
        assert error_of(response)["message"] == "Not Found"


# The error envelope


async def test_api_error_becomes_the_envelope_with_its_status_and_headers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/orders/o-1/cancel")

    assert response.status_code == 409
    assert response.headers["retry-after"] == "5"
    assert error_of(response) == {
        "code": "order_not_cancellable",
        "message": "the order is already confirmed",
        "details": {"status": "CONFIRMED"},
    }


async def test_unknown_route_is_404_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/route")

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.delete(f"/orders/{uuid.uuid4()}")

    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    assert response.headers["allow"] == "GET"


async def test_http_exception_keeps_its_status_and_detail(client: httpx.AsyncClient) -> None:
    response = await client.get("/forbidden")

    assert response.status_code == 403
    assert error_of(response) == {"code": "forbidden", "message": "admins only", "details": None}


async def test_validation_error_lists_fields_without_echoing_input(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/accounts", json={"password": "hunter2-secret"})

    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert isinstance(error["details"], list)
    locations = {tuple(detail["loc"]): detail for detail in error["details"]}
    assert set(locations) == {("body", "email"), ("body", "password")}
    assert locations[("body", "password")]["message"]
    assert "hunter2-secret" not in response.text


async def test_validation_error_cuts_long_locations_and_long_lists(
    client: httpx.AsyncClient,
) -> None:
    """A location names what the client sent (a mapping's keys): neither a huge key nor a
    thousand bad fields come back whole."""
    bad = {"x" * 100_000: "one"} | {f"count{n}": "many" for n in range(1000)}
    response = await client.post("/tallies", json=bad)

    assert response.status_code == 422
    assert len(response.content) < 10_000
    details = error_of(response)["details"]
    assert isinstance(details, list)
    assert len(details) == 21
    assert details[-1] == {"loc": [], "message": "and 981 more", "type": "truncated"}
    assert details[0]["loc"] == ["body", "x" * 64 + "…"]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"{not json", "application/json"), (b"\xff\xfe", "application/json"), (b"a=b", "text/x")],
)
async def test_malformed_bodies_are_422_never_500(
    client: httpx.AsyncClient, content: bytes, content_type: str
) -> None:
    response = await client.post(
        "/accounts", content=content, headers={"Content-Type": content_type}
    )

    assert response.status_code == 422
    assert error_of(response)["code"] == "validation_error"


async def test_a_json_body_without_its_content_type_is_told_so(client: httpx.AsyncClient) -> None:
    body = b'{"email": "ada@example.com", "password": "Analytical-Engine-1843"}'
    response = await client.post("/accounts", content=body, headers={"Content-Type": ""})

    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert "Content-Type: application/json (this request's: none)" in error["message"]

    with_header = await client.post("/accounts", json={"password": "x"})
    assert error_of(with_header)["message"] == "The request is not valid."


async def test_bad_path_parameter_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/orders/not-a-uuid")

    assert response.status_code == 422
    [detail] = error_of(response)["details"]
    assert detail["loc"] == ["path", "order_id"]
    assert detail["type"] == "uuid_parsing"
    assert "not-a-uuid" not in response.text


async def test_mapped_domain_error_uses_the_most_specific_mapping(
    client: httpx.AsyncClient,
) -> None:
    specific = await client.get("/reservations")
    general = await client.get("/orders-any")

    assert specific.status_code == 409
    assert error_of(specific) == {
        "code": "out_of_stock",
        "message": "product p-1 has 0 available",
        "details": None,
    }
    assert general.status_code == 500
    assert error_of(general)["code"] == "order_error"


async def test_unhandled_exception_is_a_generic_500_with_the_request_id(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/boom")

    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "internal_error"
    assert error["details"] == {"request_id": response.headers["x-request-id"]}
    assert "s3cr3t" not in response.text
    assert "RuntimeError" not in response.text


async def test_a_database_outage_is_a_503_with_retry_after_never_a_500(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/orders")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    error = error_of(response)
    assert error["code"] == "service_unavailable"
    assert error["details"] == {"request_id": response.headers["x-request-id"]}
    assert "s3cr3t" not in response.text


async def test_readyz_stays_ready_with_a_note_on_what_is_degraded() -> None:
    async def reachable() -> None:
        pass

    async def waiting() -> str:
        return "waiting out an outage: order.create[2]@7: for 12 s: EmailUnavailableError"

    app = build_app({"database": reachable, "consumer": waiting})
    async with client_for(app) as client:
        response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"] == {
        "database": "ok",
        "consumer": "ok, but waiting out an outage: order.create[2]@7: for 12 s: "
        "EmailUnavailableError",
    }


# Request ids and trace context


async def test_request_id_is_generated_when_absent(client: httpx.AsyncClient) -> None:
    response = await client.get("/context")

    request_id = response.headers["x-request-id"]
    assert is_uuid4(request_id)
    assert response.json()["request_id"] == request_id


async def test_sane_request_id_is_kept(client: httpx.AsyncClient) -> None:
    response = await client.get("/context", headers={"X-Request-ID": "web-42.retry_1"})

    assert response.headers["x-request-id"] == "web-42.retry_1"
    assert response.json()["request_id"] == "web-42.retry_1"


@pytest.mark.parametrize("insane", ["a" * 129, "has space", "<script>", "ok\u00e9", ""])
async def test_insane_request_id_is_replaced(client: httpx.AsyncClient, insane: str) -> None:
    response = await client.get("/context", headers=[(b"X-Request-ID", insane.encode("utf-8"))])

    assert is_uuid4(response.headers["x-request-id"])


@pytest.mark.parametrize("path", ["/no/such/route", "/boom", "/orders/o-1/cancel", "/metrics"])
async def test_every_response_carries_the_request_id(client: httpx.AsyncClient, path: str) -> None:
    response = await client.request(
        "POST" if path.endswith("cancel") else "GET", path, headers={"X-Request-ID": "req-1"}
    )

    assert response.headers["x-request-id"] == "req-1"


async def test_streamed_response_carries_the_request_id_and_its_whole_body(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/stream", headers={"X-Request-ID": "req-stream"})

    assert response.headers["x-request-id"] == "req-stream"
    assert response.text == "chunk 0\nchunk 1\nchunk 2\n"


async def test_request_context_is_gone_after_the_request(client: httpx.AsyncClient) -> None:
    await client.get("/context")

    assert current_request_id() is None
    assert current_traceparent() is None


async def test_traceparent_continues_the_callers_trace(client: httpx.AsyncClient) -> None:
    response = await client.get("/context", headers={"traceparent": CALLER_TRACEPARENT})

    traceparent = response.json()["traceparent"]
    assert TRACEPARENT.fullmatch(traceparent)
    _, trace_id, parent_id, flags = traceparent.split("-")
    assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert parent_id != "00f067aa0ba902b7"  # this service's own span
    assert flags == "01"


@pytest.mark.parametrize(
    "malformed",
    [
        None,
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    ],
)
async def test_traceparent_starts_a_new_trace_when_absent_or_malformed(
    client: httpx.AsyncClient, malformed: str | None
) -> None:
    headers = {} if malformed is None else {"traceparent": malformed}
    response = await client.get("/context", headers=headers)

    traceparent = response.json()["traceparent"]
    assert TRACEPARENT.fullmatch(traceparent)
    assert "4bf92f3577b34da6a3ce929d0e0e4736" not in traceparent.lower()


# Logs


async def test_logs_are_json_lines_carrying_the_request_id(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging("order_service", log_format=LogFormat.JSON)
    order_id = uuid.uuid4()

    await client.get(f"/orders/{order_id}", headers={"X-Request-ID": "req-logs"})
    await client.get("/boom", headers={"X-Request-ID": "req-boom"})

    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    lookup = next(r for r in records if r["message"] == f"looking up order {order_id}")
    assert lookup["request_id"] == "req-logs"
    assert lookup["service"] == "order_service"
    access = next(r for r in records if r["logger"] == "choreo.access")
    assert access["request_id"] == "req-logs"
    assert access["route"] == "/orders/{order_id}"
    assert access["status"] == 200
    failure = next(r for r in records if r["level"] == "ERROR")
    assert failure["request_id"] == "req-boom"
    assert "RuntimeError" in failure["exc_info"]


async def test_a_request_is_one_short_line_that_names_what_it_published(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging("order_service", log_format=LogFormat.TEXT)
    order_id = uuid.uuid4()

    await client.post(f"/orders/{order_id}/confirm")
    await client.get(f"/orders/{order_id}")
    await client.get("/readyz")  # the supervisor's probe: at DEBUG
    await client.get("/metrics")

    coloured = capsys.readouterr().err.splitlines()
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in coloured]
    short_id = str(order_id)[:8]
    clock = r"\d\d:\d\d:\d\d"
    assert len(lines) == 3, lines
    assert re.fullmatch(
        rf"{clock} POST /orders/{short_id}…/confirm 202 \d+\.\d ms → OrderConfirmed", lines[0]
    )
    assert re.fullmatch(rf"{clock} looking up order {short_id}…", lines[1])
    assert re.fullmatch(rf"{clock} GET /orders/{short_id}… 200 \d+\.\d ms", lines[2])
    assert " \x1b[32m200\x1b[0m " in coloured[2]  # the status coloured by its class
