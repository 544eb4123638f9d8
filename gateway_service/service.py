"""What only the public entry point adds to the kit's `Service` (wired in main.py):

- `/openapi.json` and `/docs` are the merged document's, not FastAPI's (which would describe
  the gateway alone), and public in every environment: they are the API's contract;
- `/readyz` is the gateway's own (readiness.py): ready whenever it can serve, the upstreams'
  health and the signing keys reported, not required;
- `/metrics` is the kit's (the ops token's holders only), counted against the caller's address
  like any public request first, so that hammering it is limited as anything else;
- CORS and the security headers wrap every response;
- uvicorn's own `X-Forwarded-*` handling is off: it trusts any loopback peer, and only
  GATEWAY_TRUST_FORWARDED decides whether those headers are believed.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request, Response
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from choreo.web import METRICS_PATH, REQUEST_ID_HEADER, metrics_response
from gateway_service.api import GatekeeperDep
from gateway_service.config import Settings
from gateway_service.readiness import readyz
from gateway_service.security import DOCS_PATH, SecurityHeadersMiddleware, docs_csp, docs_page

READINESS_PATH: Final = "/readyz"

CORS_METHODS: Final = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CORS_REQUEST_HEADERS: Final = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "Last-Event-ID",  # a reconnecting notification stream's
    REQUEST_ID_HEADER,
    "traceparent",
]
CORS_EXPOSED_HEADERS: Final = [
    REQUEST_ID_HEADER,
    "Location",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
]

SERVER_OPTIONS: Final = {"proxy_headers": False}
"""uvicorn's own `X-Forwarded-*` handling is off (see the module's docstring)."""


async def metrics(request: Request, gatekeeper: GatekeeperDep) -> Response:
    """The kit's `/metrics`, admitted by the rate limits first (401 after that without the ops
    token, as on every service)."""
    await gatekeeper.admit(request, public=True)
    return metrics_response(request)


ops_router = APIRouter()
"""The gateway's own `/readyz` and `/metrics`: they replace the kit's routes of those paths."""
ops_router.add_api_route(READINESS_PATH, readyz, include_in_schema=False)
ops_router.add_api_route(METRICS_PATH, metrics, include_in_schema=False)


def middleware(settings: Settings) -> list[Middleware]:
    """CORS (when origins are configured), then the security headers outermost, so preflight
    answers and error envelopes get them too."""
    layers = []
    if settings.cors_origins:
        layers.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=CORS_METHODS,
                allow_headers=CORS_REQUEST_HEADERS,
                expose_headers=CORS_EXPOSED_HEADERS,
                max_age=600,
            )
        )
    layers.append(
        Middleware(
            SecurityHeadersMiddleware,
            csp_by_path={DOCS_PATH: docs_csp(docs_page())},
            hsts=settings.hsts,
        )
    )
    return layers
