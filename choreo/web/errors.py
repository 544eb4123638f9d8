"""The error envelope, `{"error": {"code", "message", "details"}}`, and the exception handlers
that turn every refusal into it: `ApiError`, FastAPI's and Starlette's own errors, and the
domain errors a service maps to statuses.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

RETRY_AFTER_SECONDS: Final = 5
"""What a 503 for an outage (a database or broker unreachable) asks clients to wait."""

# Codes are the snake-cased reason phrase (404 `not_found`), except where the phrase changed
# between Python versions (RFC 9110 renamed 413 and 422) or the contract names it.
_ERROR_CODES: Final = {
    413: "content_too_large",
    422: "unprocessable_content",
    500: "internal_error",
}

log = logging.getLogger(__name__)


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


def add_error_handlers(
    app: FastAPI, error_statuses: Mapping[type[Exception], tuple[int, str]]
) -> None:
    """Answer `ApiError`, HTTP errors, invalid requests and the `error_statuses` classes (each
    `(status, code)`, the message being `str(exc)`) with the envelope."""
    app.exception_handler(ApiError)(_on_api_error)
    app.exception_handler(HTTPException)(_on_http_exception)
    app.exception_handler(RequestValidationError)(_on_validation_error)
    if error_statuses:
        on_mapped_error = _mapped_error_handler(dict(error_statuses))
        for error_class in error_statuses:
            app.exception_handler(error_class)(on_mapped_error)


def _error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": jsonable_encoder(details)}}
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


def unavailable_response(request_id: str) -> JSONResponse:
    """503 for an outage, which the client may expect to pass."""
    # RFC 9110 §15.6.4 (503) with §10.2.3 (Retry-After).
    return _error_response(
        503,
        "service_unavailable",
        "A system this request needs is unavailable for the moment; try again shortly.",
        {"request_id": request_id},
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def internal_error_response(request_id: str) -> JSONResponse:
    """500 for a bug: the request id is what to quote when reporting it."""
    return _error_response(
        500,
        "internal_error",
        "The server failed to handle the request; quote the request id when reporting it.",
        {"request_id": request_id},
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "HTTP error"


def _error_code(status: int) -> str:
    if status in _ERROR_CODES:
        return _ERROR_CODES[status]
    return re.sub(r"[^a-z0-9]+", "_", _phrase(status).lower()).strip("_")


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
    # A location names a mapping's keys as sent, so each part is cut short, and so is the list:
    # a body of 20,000 bad keys, or one key of 900 KB, is not echoed back whole.
    errors = exc.errors()
    details: list[dict[str, Any]] = [
        {
            "loc": [_short(part) for part in error["loc"]],
            "message": error["msg"],
            "type": error["type"],
        }
        for error in errors[:MAX_VALIDATION_DETAILS]
    ]
    if len(errors) > MAX_VALIDATION_DETAILS:
        details.append(
            {
                "loc": [],
                "message": f"and {len(errors) - MAX_VALIDATION_DETAILS} more",
                "type": "truncated",
            }
        )
    message = "The request is not valid."
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    whole_body = any(tuple(error["loc"]) == ("body",) for error in exc.errors())
    if whole_body and not media_type.endswith(("/json", "+json")):
        # FastAPI reads a body as JSON only when it says it is: without the header, a JSON
        # body fails as "Input should be a valid dictionary", which does not say why.
        shown = media_type or "none"
        message = (
            "The request is not valid: the body is read as JSON only with"
            f" Content-Type: application/json (this request's: {shown})."
        )
    return _error_response(422, "validation_error", message, details)


MAX_VALIDATION_DETAILS = 20
MAX_LOCATION_PART = 64


def _short(part: int | str) -> int | str:
    if isinstance(part, str) and len(part) > MAX_LOCATION_PART:
        return part[:MAX_LOCATION_PART] + "…"
    return part


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
