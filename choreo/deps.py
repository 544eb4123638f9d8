"""Every FastAPI dependency of the kit, as `Annotated` aliases: the unit of work, the caller
(required, an admin, or optional), the token verifier, `resource` for a service's own
resources on `app.state` (`Service(resources=...)`), `listener` for its listeners
(`Service(listeners=...)`), and `Draining`, set when the service starts shutting down.

They only read `app.state`, so they are `async def`: FastAPI runs a plain `def` dependency in a
worker thread, a thread hop per request for nothing.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, TypeVar

from fastapi import Depends, Request

from choreo.auth import AuthError, Principal, SigningKeysUnavailableError, TokenVerifier
from choreo.db import UnitOfWork, UnitOfWorkFactory
from choreo.errors import ChoreoError
from choreo.listener import Listener
from choreo.web import ApiError

if TYPE_CHECKING:
    from choreo.revocations import Revocations

T = TypeVar("T")


def resource(name: str, kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A dependency answering the service's resource `name`, which must be a `kind`:
    `Inventory = Annotated[InventoryClient, Depends(resource("inventory", InventoryClient))]`.
    A resource missing or of another type is a wiring bug: `ChoreoError`, a 500."""

    async def dependency(request: Request) -> T:
        value = getattr(request.app.state, name, None)
        if not isinstance(value, kind):
            raise ChoreoError(
                f"the service's resource {name!r} is {type(value).__name__}, not {kind.__name__}"
            )
        return value

    return dependency


def optional_resource(name: str, kind: type[T]) -> Callable[[Request], Awaitable[T | None]]:
    """As `resource`, for a resource the service may run without: None when it is missing or
    None."""
    required = resource(name, kind)

    async def dependency(request: Request) -> T | None:
        if getattr(request.app.state, name, None) is None:
            return None
        return await required(request)

    return dependency


def listener(channel: str) -> Callable[[Request], Awaitable[Listener]]:
    """A dependency answering the service's listener on `channel` (`Service(listeners=...)`):
    `Notified = Annotated[Listener, Depends(listener("notification_stream"))]`. A missing one
    is a wiring bug: `ChoreoError`, a 500."""

    async def dependency(request: Request) -> Listener:
        listeners: dict[str, Listener] = getattr(request.app.state, "listeners", {})
        found = listeners.get(channel)
        if found is None:
            raise ChoreoError(f"the service does not listen on {channel!r}")
        return found

    return dependency


async def _draining(request: Request) -> asyncio.Event:
    draining: asyncio.Event | None = getattr(request.app.state, "draining", None)
    # An app served without the kit's lifespan (a test's transport) never drains.
    return draining if draining is not None else asyncio.Event()


# Set when the service starts shutting down: a response that stays open (a stream) ends then,
# rather than holding the shutdown for its whole grace period.
Draining = Annotated[asyncio.Event, Depends(_draining)]


async def _unit_of_work(request: Request) -> UnitOfWork:
    factory: UnitOfWorkFactory | None = getattr(request.app.state, "uow_factory", None)
    if factory is None:
        raise ChoreoError("this service has no database")
    return factory()


# A fresh, unopened unit of work for a command handler or a query, which opens it itself.
Uow = Annotated[UnitOfWork, Depends(_unit_of_work)]

_token_verifier = optional_resource("token_verifier", TokenVerifier)

# The verifier of the service's access tokens, or None when it has no signing keys configured.
Verifier = Annotated[TokenVerifier | None, Depends(_token_verifier)]


async def current_principal(request: Request) -> Principal:
    """The verified caller; 401, or 503 with `Retry-After` while there are no signing keys to
    check the token with. A dependency (`CurrentUser`), and a function for code that decides
    later whether a caller is required (the gateway's rate limits)."""
    verifier = await _token_verifier(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": "Bearer"}
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthenticated", "a bearer token is required", headers=challenge)
    if verifier is None:
        raise ApiError(503, "auth_unavailable", "this service has no signing keys configured")
    try:
        principal = await verifier.verify(token.strip())
    except SigningKeysUnavailableError as error:
        # The token may well be valid: the client should try again, not log in again.
        retry_after = str(max(1, math.ceil(error.retry_after)))
        raise ApiError(
            503, "auth_unavailable", str(error), headers={"Retry-After": retry_after}
        ) from None
    except AuthError as error:
        raise ApiError(401, "unauthenticated", str(error), headers=challenge) from None
    revocations: Revocations | None = getattr(request.app.state, "revocations", None)
    if revocations is not None:
        refusal = await revocations.refusal(principal.user_id, principal.session_id)
        if refusal is not None:
            raise ApiError(401, "unauthenticated", refusal, headers=challenge)
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]


async def _authorisation_check(
    request: Request, principal: CurrentUser
) -> Callable[[], Awaitable[bool]]:
    """For a long-lived response (a stream): whether the caller's token still holds, asked
    again now and then. A token expires, and a logout or a password change revokes its session,
    while a stream that began with it is open; the stream ends then, and its client reconnects
    with a fresh token (or is refused)."""

    async def still_authorised() -> bool:
        if principal.expires_at is not None and datetime.now(UTC) >= principal.expires_at:
            return False
        revocations: Revocations | None = getattr(request.app.state, "revocations", None)
        if revocations is None:
            return True
        return await revocations.refusal(principal.user_id, principal.session_id) is None

    return still_authorised


StillAuthorised = Annotated[Callable[[], Awaitable[bool]], Depends(_authorisation_check)]


async def admin_principal(principal: CurrentUser) -> Principal:
    """The verified caller, who must hold the admin role, or 403."""
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "this needs the admin role")
    return principal


AdminUser = Annotated[Principal, Depends(admin_principal)]


async def optional_principal(request: Request) -> Principal | None:
    """The caller of a public route, or None: a missing, stale or unverifiable token (or no
    keys to verify it with) only costs what a signed-in caller would see more of, never the
    route itself."""
    if "authorization" not in request.headers:
        return None
    try:
        return await current_principal(request)
    except ApiError:
        return None


OptionalUser = Annotated[Principal | None, Depends(optional_principal)]

__all__ = [
    "AdminUser",
    "CurrentUser",
    "Draining",
    "OptionalUser",
    "Uow",
    "Verifier",
    "admin_principal",
    "current_principal",
    "listener",
    "optional_principal",
    "optional_resource",
    "resource",
]
