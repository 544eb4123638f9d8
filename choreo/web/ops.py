"""Endpoints for the system's own callers: `/metrics` (this app's request metrics and the
process's), the internal `/openapi.json`, and the ops token both need when one is set.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Final

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from starlette.responses import Response

from choreo.web.errors import ApiError

METRICS_PATH: Final = "/metrics"
OPENAPI_PATH: Final = "/openapi.json"

# Labels must stay bounded whatever clients send: unknown methods and paths share one value.
_KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
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
    metrics: HttpMetrics = request.app.state.http_metrics
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(metrics), headers={"Content-Type": content_type})


def add_metrics(app: FastAPI) -> None:
    @app.get(METRICS_PATH, include_in_schema=False)
    async def metrics_endpoint(request: Request) -> Response:
        return metrics_response(request)


def add_internal_openapi(app: FastAPI) -> None:
    @app.get(OPENAPI_PATH, include_in_schema=False)
    async def openapi_document(request: Request) -> JSONResponse:
        require_ops_token(request)
        return JSONResponse(app.openapi())
