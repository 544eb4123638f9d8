"""The gateway's HTTP routes: every `/api/v1/...` request forwarded to its service, the merged
OpenAPI document, the docs page and the Swagger UI files it loads.

The forwarding route is a catch-all, so it is left out of the gateway's own OpenAPI schema: the
merged document describes the services' real operations instead.
"""

from __future__ import annotations

from typing import Annotated, Final
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from choreo.deps import Draining, resource
from choreo.web import ApiError, current_request_id, current_traceparent
from gateway_service.domain import API_PREFIX, retry_after_seconds, route_for
from gateway_service.edge import Gatekeeper, limit_headers
from gateway_service.headers import request_headers, response_headers
from gateway_service.openapi import ApiCatalog
from gateway_service.proxy import (
    InvalidRequestError,
    OutgoingRequest,
    Proxy,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    relay,
)
from gateway_service.security import (
    DOCS_ASSETS,
    DOCS_ASSETS_PATH,
    DOCS_PATH,
    OPENAPI_PATH,
    docs_page,
)

MAX_BODY_BYTES: Final = 1024 * 1024
METHODS: Final = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


ProxyDep = Annotated[Proxy, Depends(resource("proxy", Proxy))]
GatekeeperDep = Annotated[Gatekeeper, Depends(resource("gatekeeper", Gatekeeper))]
CatalogDep = Annotated[ApiCatalog, Depends(resource("api_catalog", ApiCatalog))]

router = APIRouter()
_DOCS_PAGE: Final = docs_page()


@router.get(OPENAPI_PATH, include_in_schema=False)
async def openapi_document(
    request: Request, gatekeeper: GatekeeperDep, catalog: CatalogDep
) -> JSONResponse:
    await gatekeeper.admit(request, public=True)
    return JSONResponse(await catalog.document(request.app.openapi()))


@router.get(DOCS_PATH, include_in_schema=False)
async def docs(request: Request, gatekeeper: GatekeeperDep) -> HTMLResponse:
    await gatekeeper.admit(request, public=True)
    return _DOCS_PAGE


@router.get(f"{DOCS_ASSETS_PATH}/{{name}}", include_in_schema=False)
async def docs_asset(name: str, request: Request, gatekeeper: GatekeeperDep) -> Response:
    """One of the files the docs page loads (public like the page, and counted the same way)."""
    await gatekeeper.admit(request, public=True)
    asset = DOCS_ASSETS.get(name)
    if asset is None:
        raise ApiError(404, "not_found", f"There is no {request.url.path}.")
    return Response(
        asset.content,
        media_type=asset.media_type,
        headers={"Cache-Control": "public, max-age=86400"},
    )


@router.api_route(f"{API_PREFIX}/{{path:path}}", methods=METHODS, include_in_schema=False)
async def forward(
    request: Request, proxy: ProxyDep, gatekeeper: GatekeeperDep, draining: Draining
) -> Response:
    """Send the request to the service that serves its path, and its answer back (an event
    stream as it comes)."""
    method, path = request.method, request.scope["path"]
    route = route_for(method, path)
    # Unknown paths are counted too: scanning for them is limited like anything else.
    admission = await gatekeeper.admit(request, public=route is None or route.public)
    if route is None:
        raise ApiError(404, "not_found", f"There is no {path}.")
    outgoing = OutgoingRequest(
        method=method,
        raw_path=request.scope.get("raw_path") or quote(path).encode(),
        query=request.scope.get("query_string", b""),
        headers=request_headers(
            request.headers.items(),
            peer=request.client.host if request.client else None,
            scheme=request.url.scheme,
            trust_forwarded=gatekeeper.trust_forwarded,
            request_id=current_request_id(),
            traceparent=current_traceparent(),
        ),
        body=await _body(request),
    )
    try:
        answer = await proxy.forward(route.upstream, outgoing)
    except UpstreamUnavailableError as error:
        retry = (
            {}
            if error.retry_after is None
            else {"Retry-After": str(retry_after_seconds(error.retry_after))}
        )
        raise ApiError(503, "upstream_unavailable", str(error), headers=retry) from None
    except UpstreamTimeoutError as error:
        raise ApiError(504, "upstream_timeout", str(error)) from None
    except UpstreamProtocolError as error:
        raise ApiError(502, "bad_gateway", str(error)) from None
    except InvalidRequestError as error:
        raise ApiError(400, "invalid_request", str(error)) from None
    response: Response
    if answer.events is not None:
        response = StreamingResponse(relay(answer.events, draining), status_code=answer.status)
    else:
        response = Response(content=answer.content, status_code=answer.status)
    for name, value in response_headers(answer.headers):
        response.headers.append(name, value)
    for name, value in limit_headers(admission).items():
        response.headers[name] = value
    return response


async def _body(request: Request) -> bytes:
    """The request body, refused with 413 past MAX_BODY_BYTES (before reading it, if it says)."""
    too_large = ApiError(
        413, "content_too_large", f"The request body is larger than {MAX_BODY_BYTES} bytes."
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)
