"""What the gateway's answers carry for browsers: security headers on every response, and the
API docs page, whose Content-Security-Policy lets exactly that page load Swagger UI.

Swagger UI's script, styles and icon are the `swagger-ui-py` package's copy of its dist files,
served by the gateway itself under `/docs/assets/`, so the page works without internet; the
policy names this origin and the page's one inline script by its hash, and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import Final

from fastapi.openapi.docs import get_swagger_ui_html
from starlette.datastructures import MutableHeaders
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DOCS_PATH: Final = "/docs"
OPENAPI_PATH: Final = "/openapi.json"
DOCS_ASSETS_PATH: Final = "/docs/assets"

# JSON answers load nothing and are never framed.
API_CSP: Final = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
HSTS: Final = "max-age=63072000; includeSubDomains"

_INLINE_SCRIPT: Final = re.compile(r"<script>(.*?)</script>", re.DOTALL)


@dataclass(frozen=True)
class DocsAsset:
    """One file of Swagger UI's dist that the docs page loads, read once at start-up."""

    content: bytes
    media_type: str


# Swagger UI's dist as swagger-ui-py ships it (with Swagger UI's Apache-2.0 LICENSE beside it).
_SWAGGER_UI_DIST: Final = files("swagger_ui") / "static"
DOCS_ASSETS: Final = {
    name: DocsAsset((_SWAGGER_UI_DIST / name).read_bytes(), media_type)
    for name, media_type in (
        ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
        ("swagger-ui.css", "text/css; charset=utf-8"),
        ("favicon-32x32.png", "image/png"),
    )
}
"""The files served under DOCS_ASSETS_PATH, by name: nothing else of the package is."""


def docs_page() -> HTMLResponse:
    """Swagger UI on the merged document, its files from this origin."""
    return get_swagger_ui_html(
        openapi_url=OPENAPI_PATH,
        title="Choreo API",
        swagger_js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS_PATH}/favicon-32x32.png",
        swagger_ui_parameters={"persistAuthorization": True},
    )


def docs_csp(page: HTMLResponse) -> str:
    """The policy of the docs page: Swagger UI's script and styles from this origin, the page's
    own inline script (by hash, so no other inline script runs), requests to this origin only."""
    body = bytes(page.body).decode()
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(body)
    )
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src 'self' {hashes}",
            "style-src 'self' 'unsafe-inline'",  # Swagger UI sets style attributes
            "img-src 'self' data:",  # its icons are data: URLs in its stylesheet
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
