"""Which headers travel each way through the gateway, and how: hop-by-hop ones dropped (RFC 9110
§7.6.1), the forwarding ones set by the gateway, an upstream's own address never shown to a
client (`public_location`), and header bytes passed on exactly as received (`ByteExactRequest`).

Header names and values are held as the bytes received, decoded as Latin-1 (as Starlette does),
so that they go out as they came in, whatever bytes a client or an upstream sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Final, cast
from urllib.parse import SplitResult, urlsplit

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection

from gateway_service.domain import client_address

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# The gateway sets these itself on the way in; `accept-encoding` is left to the client, which
# decodes what the upstream compressed (the gateway answers uncompressed).
_SET_ON_THE_WAY_IN: Final = frozenset(
    {
        "host",
        "content-length",
        "accept-encoding",
        "x-request-id",
        "traceparent",
        "x-forwarded-for",
        "x-forwarded-proto",
        "forwarded",
        "x-real-ip",
    }
)
# Recomputed for the body the gateway sends back, or set by the gateway's own server.
_SET_ON_THE_WAY_OUT: Final = frozenset(
    {"content-length", "content-encoding", "date", "server", "x-request-id"}
)
# Answer headers holding a URI reference, which may name the upstream's own address.
LOCATION_HEADERS: Final = ("location", "content-location")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def public_location(value: str, base_urls: Iterable[str]) -> str | None:
    """`value` (a `Location` or `Content-Location` from an upstream) as a client may see it.

    A URL on the origin of one of the upstreams' `base_urls` (scheme-relative ones too) becomes
    the gateway path it is served at: the path under that base URL, with its query and
    fragment; on that origin but outside the base URL, or unreadable, it has no public
    spelling (None: drop it).
    Anything else (a path, a third party's URL) is left as it is.
    """
    try:
        target = urlsplit(value.strip())
        if not target.netloc:
            return value  # a reference on the same origin: the gateway's, to the client
        origin = _origin(target, default_scheme=None)
    except ValueError:
        return None
    for base_url in base_urls:
        base = urlsplit(base_url)
        if origin != _origin(base, default_scheme=base.scheme):
            continue
        prefix = base.path.rstrip("/")
        path = target.path or "/"
        if prefix and not (path == prefix or path.startswith(prefix + "/")):
            return None
        public = path[len(prefix) :] or "/"
        query = f"?{target.query}" if target.query else ""
        fragment = f"#{target.fragment}" if target.fragment else ""
        return f"{public}{query}{fragment}"
    return value


def _origin(url: SplitResult, *, default_scheme: str | None) -> tuple[str, int | None]:
    """Host and port of `url` (the scheme's default port when none is written); a URL without
    a scheme takes `default_scheme`'s. Raises ValueError for a port that is not one."""
    scheme = url.scheme.lower() or default_scheme
    port = url.port or _DEFAULT_PORTS.get(scheme or "")
    return ((url.hostname or "").lower(), port)


def request_headers(
    incoming: Iterable[tuple[str, str]],
    *,
    peer: str | None,
    scheme: str,
    trust_forwarded: bool,
    request_id: str | None,
    traceparent: str | None,
) -> list[tuple[str, str]]:
    """The client's end-to-end headers, plus the request id, the gateway's span of the trace,
    and where the request came from: `X-Forwarded-*`, and `X-Real-IP`, the one client address
    the gateway counts the request against (`client_address`), which the order service keeps
    for the payment service's risk screening. A client's own `X-Real-IP` is dropped."""
    # A field value has no leading or trailing whitespace (RFC 9110 §5.5: the OWS around it is
    # not part of it); sent on as received, `Name: a ` made the upstream connection refuse the
    # request, and the breaker count a client's header as the upstream failing.
    incoming = [(name, value.strip(" \t")) for name, value in incoming]
    named_by_connection = _connection_tokens(incoming)
    headers = [
        (name, value)
        for name, value in incoming
        if (lowered := name.lower()) not in HOP_BY_HOP
        and lowered not in _SET_ON_THE_WAY_IN
        and lowered not in named_by_connection
    ]
    received = {name.lower(): value for name, value in incoming}
    forwarded_for = peer or "unknown"
    proto = scheme
    if trust_forwarded:
        if received.get("x-forwarded-for"):
            forwarded_for = f"{received['x-forwarded-for']}, {forwarded_for}"
        proto = received.get("x-forwarded-proto") or proto
    client = client_address(peer, received.get("x-forwarded-for"), trust_forwarded=trust_forwarded)
    headers += [
        ("X-Forwarded-For", forwarded_for),
        ("X-Forwarded-Proto", proto),
        ("X-Real-IP", client),
    ]
    if request_id:
        headers.append(("X-Request-ID", request_id))
    if traceparent:
        headers.append(("traceparent", traceparent))
    return headers


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The upstream's answer headers that the client should see (the raw ones, decoded as
    Latin-1, so that they reach the client byte for byte)."""
    items = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]
    named_by_connection = _connection_tokens(items)
    return [
        (name, value)
        for name, value in items
        if (lowered := name.lower()) not in HOP_BY_HOP
        and lowered not in _SET_ON_THE_WAY_OUT
        and lowered not in named_by_connection
    ]


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    """Headers the sender declared hop-by-hop by naming them in `Connection`."""
    return {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
        if token.strip()
    }


class ByteExactRequest(aiohttp.ClientRequest):
    """A request whose request line and headers go out as the bytes the client sent.

    aiohttp writes header strings as UTF-8 and has no option for anything else
    (aio-libs/aiohttp#7943), while the gateway's strings are those bytes decoded as Latin-1: a
    value with a byte of 0x80 or above (`café` in Latin-1) would reach the upstream altered.
    For such a request (only), the header block's first write is turned back into Latin-1 on
    its way to the connection's transport.
    """

    async def send(self, conn: Connection) -> aiohttp.ClientResponse:
        protocol = conn.protocol
        if (
            protocol is not None
            and protocol.transport is not None
            and not (
                self.url.raw_path_qs.isascii()
                and all(name.isascii() and value.isascii() for name, value in self.headers.items())
            )
        ):
            protocol.transport = cast(
                asyncio.Transport, _Latin1HeaderBlock(protocol, protocol.transport)
            )
        return await super().send(conn)


class _Latin1HeaderBlock:
    """Stands in for a connection's transport until a request's first write, which begins with
    its header block: that block is re-encoded from UTF-8 to Latin-1, and the transport put
    back. Everything else is the transport's."""

    def __init__(self, protocol: ResponseHandler, transport: asyncio.Transport) -> None:
        self._protocol = protocol
        self._transport = transport
        self._pending = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(self._latin1(data))

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        first, *rest = chunks
        self._transport.writelines([self._latin1(first), *rest])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def _latin1(self, data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
        if not self._pending:
            return data
        self._pending = False
        self._protocol.transport = self._transport
        written = bytes(data)
        end = written.index(b"\r\n\r\n") + 4  # a header block holds no empty line before it
        return written[:end].decode("utf-8").encode("latin-1") + written[end:]
