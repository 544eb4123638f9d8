"""What every request carries while it is served: its id (`X-Request-ID`) and W3C trace
context (`traceparent`), which logs and published events quote; and the middleware that sets
them, counts the request in the HTTP metrics, logs it, and answers an unhandled error with the
envelope (503 for an outage, 500 otherwise).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
import uuid
from collections.abc import Collection
from contextvars import ContextVar
from typing import Final

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from choreo.errors import Failure, failure_of
from choreo.logs import collect_published, request_id_var
from choreo.web.errors import internal_error_response, unavailable_response
from choreo.web.ops import METRICS_PATH, HttpMetrics
from choreo.web.probes import HEALTH_PATH, READINESS_PATH

REQUEST_ID_HEADER: Final = "X-Request-ID"

_traceparent_var: ContextVar[str | None] = ContextVar("choreo_traceparent", default=None)

_SANE_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_PROBE_PATHS: Final = frozenset({HEALTH_PATH, READINESS_PATH, METRICS_PATH})
_UNMATCHED_ROUTE: Final = "unmatched"
_CLIENT_CLOSED_REQUEST: Final = 499  # nginx's convention; no response reached the client

log = logging.getLogger(__name__)
access_log = logging.getLogger("choreo.access")


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


class RequestContextMiddleware:
    """Request id, trace context, metrics, access log, and the envelope for unhandled errors.

    Pure ASGI so that it costs one wrapped `send` and never buffers a streamed body.
    """

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
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
        published = collect_published()
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
            answer = unavailable_response if outage else internal_error_response
            await answer(request_id)(scope, receive, send_with_request_id)
        finally:
            self._record(scope, root_path, status, time.perf_counter() - started, published)
            _traceparent_var.reset(traceparent_token)
            request_id_var.reset(request_id_token)

    def _record(
        self, scope: Scope, root_path: str, status: int, seconds: float, published: Collection[str]
    ) -> None:
        """Metrics, and one line: `POST /api/v1/orders 202 31.5 ms → OrderCreated` (the
        records the request published), at DEBUG for the probes the supervisor polls."""
        method: str = scope["method"]
        route = _route_template(scope, root_path)
        self.metrics.observe(method, route, status, seconds)
        path: str = scope["path"]
        fields: dict[str, object] = {
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
        }
        led_to = ""
        if published:
            fields["published"] = list(published)
            led_to = f" → {', '.join(published)}"
        access_log.log(
            logging.DEBUG if path in _PROBE_PATHS else logging.INFO,
            "%s %s %d %.1f ms%s",
            method,
            path,
            status,
            seconds * 1000,
            led_to,
            extra=fields,
        )
