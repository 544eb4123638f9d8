"""The gateway's `/readyz`: ready whenever it can serve, with what it sees of each upstream and
of the signing keys reported beside it.

An upstream that is down does not make the gateway unready: its own routes answer 503 (its
circuit breaker) while every other route works. Nor do missing signing keys: public routes
need none, and the others answer 503 with `Retry-After` until the keys arrive.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from fastapi.responses import JSONResponse

from choreo.auth import SigningKeysUnavailableError, TokenVerifier
from choreo.deps import Verifier
from gateway_service.api import ProxyDep
from gateway_service.proxy import HEALTH_TIMEOUT_SECONDS, Proxy

# A first fetch of the keys that takes longer than this is reported as under way (it goes on).
KEYS_TIMEOUT_SECONDS: Final = HEALTH_TIMEOUT_SECONDS


async def readyz(proxy: ProxyDep, verifier: Verifier) -> JSONResponse:
    names = list(proxy.upstreams)
    *health, keys = await asyncio.gather(
        *(_upstream_health(proxy, name) for name in names), _signing_keys(verifier)
    )
    return JSONResponse(
        {
            "status": "ready",
            "checks": {},  # nothing the gateway needs to serve is missing once it answers
            "upstreams": dict(zip(names, health, strict=True)),
            "signing_keys": keys,
        }
    )


async def _upstream_health(proxy: Proxy, name: str) -> dict[str, Any]:
    problem = await proxy.check_health(name)
    health = "ok" if problem is None else f"error: {problem}"[:200]
    return {"health": health, "circuit": proxy.upstreams[name].breaker.state.value}


async def _signing_keys(verifier: TokenVerifier | None) -> str:
    if verifier is None:
        return "error: none configured"
    try:
        # Asking fetches the keys when there are none yet, so they arrive without a request.
        await asyncio.wait_for(verifier.check_keys(), KEYS_TIMEOUT_SECONDS)
    except TimeoutError:
        return "error: still being fetched"
    except SigningKeysUnavailableError as error:
        return f"error: {error}"[:200]
    return "ok"
