"""`create_app`, the FastAPI app every service serves: its routers, with the probes, the ops
endpoints, the error envelope and the request context added; and who may read its API docs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum

from fastapi import APIRouter, FastAPI
from starlette.types import Lifespan as StarletteLifespan

from choreo.web.context import RequestContextMiddleware
from choreo.web.errors import add_error_handlers
from choreo.web.ops import OPENAPI_PATH, HttpMetrics, add_internal_openapi, add_metrics
from choreo.web.probes import READINESS_TIMEOUT_SECONDS, ReadinessCheck, add_probes

Lifespan = StarletteLifespan[FastAPI]


class ApiDocs(StrEnum):
    """Who may read a service's API description."""

    PUBLIC = "public"
    """FastAPI's `/docs`, `/redoc` and `/openapi.json`, for anyone (dev and test)."""
    INTERNAL = "internal"
    """`/openapi.json` only, for holders of the ops token (the gateway merges it); no pages."""
    NONE = "none"
    """Nothing from the kit: the app serves a description of its own (the gateway)."""


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
    `/openapi.json` too when `docs` is INTERNAL (which needs one). No app redirects: a path is
    served as declared or is a 404.
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
    metrics = HttpMetrics()
    app.state.ops_token = ops_token or None
    app.state.http_metrics = metrics
    add_probes(app, service, dict(readiness or {}), readiness_timeout)
    add_metrics(app)
    if docs is ApiDocs.INTERNAL:
        add_internal_openapi(app)
    for router in routers:
        app.include_router(router)
    add_error_handlers(app, error_statuses or {})
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app
