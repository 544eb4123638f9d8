"""What the gateway's answers carry for browsers: security headers on every response, and the
API docs page, whose Content-Security-Policy lets exactly that page load Swagger UI.

Swagger UI comes from a CDN (what FastAPI's page references): users online get it; the policy
names the CDN and the page's one inline script by its hash, and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from typing import Final

from fastapi.openapi.docs import get_swagger_ui_html
from starlette.datastructures import MutableHeaders
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DOCS_PATH: Final = "/docs"
OPENAPI_PATH: Final = "/openapi.json"
SWAGGER_CDN: Final = "https://cdn.jsdelivr.net"
FAVICON_HOST: Final = "https://fastapi.tiangolo.com"

# JSON answers load nothing and are never framed.
API_CSP: Final = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
HSTS: Final = "max-age=63072000; includeSubDomains"

_INLINE_SCRIPT: Final = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def docs_page() -> HTMLResponse:
    """Swagger UI on the merged document."""
    return get_swagger_ui_html(
        openapi_url=OPENAPI_PATH,
        title="Choreo API",
        swagger_ui_parameters={"persistAuthorization": True},
    )


def docs_csp(page: HTMLResponse) -> str:
    """The policy of the docs page: the CDN's script and styles, the page's own inline script
    (by hash, so no other inline script runs), and requests to this origin only."""
    body = bytes(page.body).decode()
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(body)
    )
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src {SWAGGER_CDN} {hashes}",
            f"style-src {SWAGGER_CDN} 'unsafe-inline'",  # Swagger UI sets style attributes
            f"img-src 'self' data: {SWAGGER_CDN} {FAVICON_HOST}",
            f"font-src {SWAGGER_CDN} data:",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        )
    )


class SecurityHeadersMiddleware:
    """Sets the security headers on every HTTP response (pure ASGI: streams stay streams)."""

    def __init__(self, app: ASGIApp, *, csp_by_path: Mapping[str, str], hsts: bool = False) -> None:
        self.app = app
        self.csp_by_path = dict(csp_by_path)
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = self.csp_by_path.get(scope["path"], API_CSP)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = "no-referrer"
                headers["Content-Security-Policy"] = csp
                if self.hsts:
                    headers["Strict-Transport-Security"] = HSTS
            await send(message)

        await self.app(scope, receive, send_with_headers)
