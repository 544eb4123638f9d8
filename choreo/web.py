"""The FastAPI app every service serves: health, readiness, metrics, the error envelope, ids.

`create_app` adds `/healthz`, `/readyz` and `/metrics`, turns every error into
`{"error": {"code", "message", "details"}}`, and gives each request an id (`X-Request-ID`) and a
W3C trace context (`traceparent`) that logs and published events carry. Operational endpoints
are for the system's own callers: `/metrics` (and `/openapi.json` when the docs are internal)
need the ops token when one is set. No app redirects: a path is served as declared or is a 404.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from enum import StrEnum
from http import HTTPStatus
from typing import Any, Final

from fastapi import APIRouter, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.types import Lifespan as StarletteLifespan

from choreo.errors import Failure, failure_of
from choreo.logs import request_id_var

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Raises when the dependency is not usable (the service is not ready); returns None when it
is, or a note on something degraded that does not stop the service from serving (a consumer
waiting out a provider's outage), which `/readyz` shows in place of "ok"."""

Lifespan = StarletteLifespan[FastAPI]

READINESS_TIMEOUT_SECONDS: Final = 2.0
RETRY_AFTER_SECONDS: Final = 5
"""What a 503 for an outage (a database or broker unreachable) asks clients to wait."""
REQUEST_ID_HEADER: Final = "X-Request-ID"
METRICS_PATH: Final = "/metrics"
OPENAPI_PATH: Final = "/openapi.json"


class ApiDocs(StrEnum):
    """Who may read a service's API description."""

    PUBLIC = "public"
    """FastAPI's `/docs`, `/redoc` and `/openapi.json`, for anyone (dev and test)."""
    INTERNAL = "internal"
    """`/openapi.json` only, for holders of the ops token (the gateway merges it); no pages."""
    NONE = "none"
    """Nothing from the kit: the app serves a description of its own (the gateway)."""


_traceparent_var: ContextVar[str | None] = ContextVar("choreo_traceparent", default=None)

_SANE_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_PROBE_PATHS: Final = frozenset({"/healthz", "/readyz", METRICS_PATH})
# Labels must stay bounded whatever clients send: unknown methods and paths share one value.
_KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_UNMATCHED_ROUTE: Final = "unmatched"
_CLIENT_CLOSED_REQUEST: Final = 499  # nginx's convention; no response reached the client

# Codes are the snake-cased reason phrase (404 `not_found`), except where the phrase changed
# between Python versions (RFC 9110 renamed 413 and 422) or the contract names it.
_ERROR_CODES: Final = {
    413: "content_too_large",
    422: "unprocessable_content",
    500: "internal_error",
}

log = logging.getLogger(__name__)
access_log = logging.getLogger("choreo.access")


class ApiError(Exception):
    """Raised by route code to answer with the error envelope and the given status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def current_request_id() -> str | None:
    """The id of the HTTP request being served, or None outside a request."""
    return request_id_var.get()


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the request being served (this service's span), or None."""
    return _traceparent_var.get()


def _request_id_from(header: str | None) -> str:
    if header is not None and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return str(uuid.uuid4())


def _traceparent_from(header: str | None) -> str:
    """A span of the caller's trace (same trace id and flags, a new parent id), or a new trace."""
    match = _TRACEPARENT.fullmatch(header.strip()) if header else None
    if match is not None:
        version, trace_id, parent_id, flags, future_fields = match.groups()
        if (
            version != "ff"
            and not (version == "00" and future_fields)
            and trace_id != "0" * 32
            and parent_id != "0" * 16
        ):
            return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "HTTP error"


def _error_code(status: int) -> str:
    if status in _ERROR_CODES:
        return _ERROR_CODES[status]
    return re.sub(r"[^a-z0-9]+", "_", _phrase(status).lower()).strip("_")


def _error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": jsonable_encoder(details)}}
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


def _unavailable_response(request_id: str) -> JSONResponse:
    # RFC 9110 §15.6.4 (503) with §10.2.3 (Retry-After): the outage is expected to pass.
    return _error_response(
        503,
        "service_unavailable",
        "A system this request needs is unavailable for the moment; try again shortly.",
        {"request_id": request_id},
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _internal_error_response(request_id: str) -> JSONResponse:
    return _error_response(
        500,
        "internal_error",
        "The server failed to handle the request; quote the request id when reporting it.",
        {"request_id": request_id},
    )


def _route_template(scope: Scope, root_path: str) -> str:
    """The matched route's path template, e.g. `/orders/{order_id}`; bounded, unlike the path.

    FastAPI includes routers lazily: an API route keeps the path it was declared with, and the
    full template (router prefixes included) is on FastAPI's private effective route context,
    so that is read first. FastAPI's router does not record plain Starlette routes (`/docs`,
    `add_route`) at all: those are found by their endpoint. `root_path` is the one the request
    arrived with: anything a mount added to it since is the mount's prefix.
    """
    fastapi_scope = scope.get("fastapi")
    context = (
        fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    )
    template = getattr(context, "path_format", None) or getattr(
        scope.get("route"), "path_format", None
    )
    if template is None and "endpoint" in scope:
        routes = getattr(scope.get("router"), "routes", ())
        endpoint_routes = (
            route for route in routes if getattr(route, "endpoint", None) is scope["endpoint"]
        )
        template = getattr(next(endpoint_routes, None), "path_format", None)
    if not isinstance(template, str):
        return _UNMATCHED_ROUTE
    mount_prefix: str = scope.get("root_path", "")[len(root_path) :]
    return mount_prefix + template


class _HttpMetrics:
    """This app's request metrics, exposed together with the process-wide default registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("method", "route", "status")
        self.requests = Counter(
            "http_requests",
            "HTTP requests served, by method, route template and status.",
            labels,
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to serve an HTTP request, by method, route template and status.",
            labels,
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method if method in _KNOWN_METHODS else "OTHER", route, str(status))
        self.requests.labels(*labels).inc()
        self.duration.labels(*labels).observe(seconds)

    def collect(self) -> Iterable[Metric]:
        yield from self.registry.collect()
        yield from REGISTRY.collect()  # the kit's relay and consumer metrics, process stats


class _RequestContextMiddleware:
    """Request id, trace context, metrics, access log, and the envelope for unhandled errors.

    Pure ASGI so that it costs one wrapped `send` and never buffers a streamed body.
    """

    def __init__(self, app: ASGIApp, metrics: _HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        root_path: str = scope.get("root_path", "")
        request_id = _request_id_from(headers.get("x-request-id"))
        request_id_token = request_id_var.set(request_id)
        traceparent_token = _traceparent_var.set(_traceparent_from(headers.get("traceparent")))
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        except ClientDisconnect:
            status = _CLIENT_CLOSED_REQUEST
        except Exception as error:
            route = _route_template(scope, root_path)
            outage = failure_of(error) is Failure.OUTAGE
            if outage:
                log.warning("%s %s answered 503: %r", scope["method"], route, error)
            else:
                log.exception("unhandled error in %s %s", scope["method"], route)
            if response_started:
                raise  # too late for an envelope: the server aborts the response
            answer = _unavailable_response if outage else _internal_error_response
            await answer(request_id)(scope, receive, send_with_request_id)
        finally:
            self._record(scope, root_path, status, time.perf_counter() - started)
            _traceparent_var.reset(traceparent_token)
            request_id_var.reset(request_id_token)

    def _record(self, scope: Scope, root_path: str, status: int, seconds: float) -> None:
        method: str = scope["method"]
        route = _route_template(scope, root_path)
        self.metrics.observe(method, route, status, seconds)
        path: str = scope["path"]
        access_log.log(
            logging.DEBUG if path in _PROBE_PATHS else logging.INFO,
            "%s %s %d %.1f ms",
            method,
            path,
            status,
            seconds * 1000,
            extra={"route": route, "status": status, "duration_ms": round(seconds * 1000, 1)},
        )


async def _on_api_error(request: Request, exc: ApiError) -> Response:
    if exc.status >= 500:
        log.warning(
            "%s %s answered %d %s: %s",
            request.method,
            request.url.path,
            exc.status,
            exc.code,
            exc.message,
        )
    return _error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


def _canonical_path(request: Request) -> str | None:
    """The path without its trailing slash, when a route serves that (apps never redirect: a
    redirect built from the Host header would hand clients an internal address)."""
    path: str = request.scope["path"]
    if path == "/" or not path.endswith("/") or "endpoint" in request.scope:
        return None
    scope = {**request.scope, "path": path.rstrip("/") or "/"}
    routes = request.app.router.routes
    if any(route.matches(scope)[0] is not Match.NONE for route in routes):
        return str(scope["path"])
    return None


async def _on_http_exception(request: Request, exc: HTTPException) -> Response:
    canonical = _canonical_path(request) if exc.status_code == 404 else None
    if canonical is not None:
        message = f"There is no {request.scope['path']}; the path is {canonical}."
        return _error_response(404, "not_found", message)
    if isinstance(exc.detail, str):
        message, details = exc.detail, None
    else:  # FastAPI's HTTPException takes any JSON-able detail
        message, details = _phrase(exc.status_code), exc.detail
    return _error_response(
        exc.status_code, _error_code(exc.status_code), message, details, exc.headers
    )


async def _on_validation_error(request: Request, exc: RequestValidationError) -> Response:
    # Location, message and type only: the rejected input may be a password or a card number.
    details = [
        {"loc": list(error["loc"]), "message": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    return _error_response(422, "validation_error", "The request is not valid.", details)


def _mapped_error_handler(
    error_statuses: Mapping[type[Exception], tuple[int, str]],
) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def on_mapped_error(request: Request, exc: Exception) -> Response:
        # The most specific mapped class wins, as it would with one handler per class.
        status, code = next(
            error_statuses[cls] for cls in type(exc).__mro__ if cls in error_statuses
        )
        if status >= 500:
            log.warning(
                "%s %s answered %d %s", request.method, request.url.path, status, code, exc_info=exc
            )
        return _error_response(status, code, str(exc))

    return on_mapped_error


async def _run_check(name: str, check: ReadinessCheck, timeout: float) -> str:
    try:
        note = await asyncio.wait_for(check(), timeout)
    except TimeoutError:
        log.warning("readiness check %s timed out after %g s", name, timeout)
        return f"error: timed out after {timeout:g} s"
    except Exception as exc:
        log.warning("readiness check %s failed", name, exc_info=True)
        lines = str(exc).strip().splitlines()
        summary = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        return f"error: {summary[:200]}"
    return "ok" if note is None else f"ok, but {note}"


def _add_probes(
    app: FastAPI,
    service: str,
    readiness: Mapping[str, ReadinessCheck],
    readiness_timeout: float,
    metrics: _HttpMetrics,
) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        names = list(readiness)
        results = await asyncio.gather(
            *(_run_check(name, readiness[name], readiness_timeout) for name in names)
        )
        checks = dict(zip(names, results, strict=True))
        ready = not any(result.startswith("error: ") for result in results)
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get(METRICS_PATH, include_in_schema=False)
    async def metrics_endpoint(request: Request) -> Response:
        return metrics_response(request)


def require_ops_token(request: Request) -> None:
    """Raises 401 unless the request carries the app's ops token (any request passes when the
    app has none, which only dev and test allow)."""
    token: str | None = request.app.state.ops_token
    if token is None:
        return
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        presented.strip().encode("latin-1"), token.encode()
    ):
        raise ApiError(
            401,
            "unauthenticated",
            "This endpoint is for the system's operators: send the ops token "
            "(CHOREO_OPS_TOKEN) as a bearer token.",
            headers={"WWW-Authenticate": "Bearer"},
        )


def metrics_response(request: Request) -> Response:
    """What `/metrics` answers: the Prometheus exposition, for holders of the ops token."""
    require_ops_token(request)
    metrics: _HttpMetrics = request.app.state.http_metrics
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(metrics), headers={"Content-Type": content_type})


def _add_internal_openapi(app: FastAPI) -> None:
    @app.get(OPENAPI_PATH, include_in_schema=False)
    async def openapi_document(request: Request) -> JSONResponse:
        require_ops_token(request)
        return JSONResponse(app.openapi())


def create_app(
    service: str,
    *,
    readiness: Mapping[str, ReadinessCheck] | None = None,
    routers: Sequence[APIRouter] = (),
    lifespan: Lifespan | None = None,
    error_statuses: Mapping[type[Exception], tuple[int, str]] | None = None,
    version: str = "0.1.0",
    readiness_timeout: float = READINESS_TIMEOUT_SECONDS,
    ops_token: str | None = None,
    docs: ApiDocs = ApiDocs.PUBLIC,
) -> FastAPI:
    """Build a service's app: its routers plus probes, metrics, error envelope and request ids.

    `readiness` names the dependencies `/readyz` checks (each given `readiness_timeout`
    seconds); `error_statuses` maps domain exception classes to `(status, code)`, the message
    being `str(exc)`. `ops_token`, when given, is the bearer token `/metrics` needs, and
    `/openapi.json` too when `docs` is INTERNAL (which needs one).
    """
    if docs is ApiDocs.INTERNAL and not ops_token:
        raise ValueError("internal API docs need an ops token to serve them to")
    public_docs = docs is ApiDocs.PUBLIC
    app = FastAPI(
        title=service,
        version=version,
        lifespan=lifespan,
        openapi_url=OPENAPI_PATH if public_docs else None,
        docs_url="/docs" if public_docs else None,
        redoc_url="/redoc" if public_docs else None,
        # Starlette's redirect to the other spelling is absolute, built from the Host header:
        # behind the gateway it would send clients to the service's internal address.
        redirect_slashes=False,
    )
    metrics = _HttpMetrics()
    app.state.ops_token = ops_token or None
    app.state.http_metrics = metrics
    _add_probes(app, service, dict(readiness or {}), readiness_timeout, metrics)
    if docs is ApiDocs.INTERNAL:
        _add_internal_openapi(app)
    for router in routers:
        app.include_router(router)

    app.exception_handler(ApiError)(_on_api_error)
    app.exception_handler(HTTPException)(_on_http_exception)
    app.exception_handler(RequestValidationError)(_on_validation_error)
    if error_statuses:
        on_mapped_error = _mapped_error_handler(dict(error_statuses))
        for error_class in error_statuses:
            app.exception_handler(error_class)(on_mapped_error)

    app.add_middleware(_RequestContextMiddleware, metrics=metrics)
    return app
