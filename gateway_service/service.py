"""The gateway's process: the kit's `Service`, plus what only the public entry point needs.

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

from collections.abc import Mapping, Sequence
from typing import Final

import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute

from choreo.auth import TokenVerifier
from choreo.logs import configure_logging
from choreo.service import Service
from choreo.web import METRICS_PATH, REQUEST_ID_HEADER, ApiDocs, metrics_response
from gateway_service.api import GatekeeperDep
from gateway_service.config import Settings
from gateway_service.readiness import readyz
from gateway_service.security import DOCS_PATH, SecurityHeadersMiddleware, docs_csp, docs_page

READINESS_PATH: Final = "/readyz"
# The kit's routes the gateway serves its own way.
_REPLACED_PATHS: Final = frozenset({READINESS_PATH, METRICS_PATH})

CORS_METHODS: Final = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CORS_REQUEST_HEADERS: Final = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
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


class GatewayService(Service):
    def __init__(
        self,
        settings: Settings,
        *,
        routers: Sequence[APIRouter],
        resources: Mapping[str, object],
        token_verifier: TokenVerifier | None,
        cors_origins: Sequence[str] = (),
        hsts: bool = False,
    ) -> None:
        super().__init__(
            settings,
            routers=routers,
            resources=resources,
            token_verifier=token_verifier,
            docs=ApiDocs.NONE,  # the merged document and its page are the gateway's routes
        )
        self._cors_origins = list(cors_origins)
        self._hsts = hsts

    def app(self) -> FastAPI:
        app = super().app()
        app.router.routes[:] = [
            route for route in app.router.routes if not _replaced_by_the_gateway(route)
        ]
        app.add_api_route(READINESS_PATH, readyz, include_in_schema=False)
        app.add_api_route(METRICS_PATH, metrics, include_in_schema=False)
        if self._cors_origins:
            app.add_middleware(
                CORSMiddleware,
                allow_origins=self._cors_origins,
                allow_methods=CORS_METHODS,
                allow_headers=CORS_REQUEST_HEADERS,
                expose_headers=CORS_EXPOSED_HEADERS,
                max_age=600,
            )
        # Added last, so outermost: preflight answers and error envelopes get the headers too.
        app.add_middleware(
            SecurityHeadersMiddleware,
            csp_by_path={DOCS_PATH: docs_csp(docs_page())},
            hsts=self._hsts,
        )
        return app

    def run(self) -> None:
        """Serve until SIGTERM or Ctrl-C (the gateway has no database to migrate)."""
        configure_logging(self.name, self.settings.log_level)
        uvicorn.run(
            self.app(),
            host=self.settings.host,
            port=self.settings.port,
            log_config=None,
            timeout_graceful_shutdown=10,
            proxy_headers=False,
        )


async def metrics(request: Request, gatekeeper: GatekeeperDep) -> Response:
    """The kit's `/metrics`, admitted by the rate limits first (401 after that without the ops
    token, as on every service)."""
    await gatekeeper.admit(request, public=True)
    return metrics_response(request)


def _replaced_by_the_gateway(route: BaseRoute) -> bool:
    return getattr(route, "path", None) in _REPLACED_PATHS
