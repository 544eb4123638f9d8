"""The probes: `/healthz` (the process answers) and `/readyz` (each dependency the service
names answers within its timeout), and what a readiness check is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from fastapi import FastAPI
from fastapi.responses import JSONResponse

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Raises when the dependency is not usable (the service is not ready); returns None when it
is, or a note on something degraded that does not stop the service from serving (a consumer
waiting out a provider's outage), which `/readyz` shows in place of "ok"."""

HEALTH_PATH: Final = "/healthz"
READINESS_PATH: Final = "/readyz"
READINESS_TIMEOUT_SECONDS: Final = 2.0

log = logging.getLogger(__name__)


def add_probes(
    app: FastAPI,
    service: str,
    readiness: Mapping[str, ReadinessCheck],
    readiness_timeout: float,
) -> None:
    @app.get(HEALTH_PATH, include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get(READINESS_PATH, include_in_schema=False)
    async def readyz() -> JSONResponse:
        names = list(readiness)
        results = await asyncio.gather(
            *(_run_check(name, readiness[name], readiness_timeout) for name in names)
        )
        checks = dict(zip(names, results, strict=True))
        ready = not any(result.startswith("error: ") for result in results)
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )


async def _run_check(name: str, check: ReadinessCheck, timeout: float) -> str:
    try:
        note = await asyncio.wait_for(check(), timeout)
    except TimeoutError:
        log.warning("readiness check %s timed out after %g s", name, timeout)
        return f"error: timed out after {timeout:g} s"
    except Exception as exc:
        # An answer, not a bug: a dependency that is starting or down. The summary says which
        # and why; a traceback would only repeat the client library's call stack.
        lines = str(exc).strip().splitlines()
        summary = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        log.warning("readiness check %s failed: %s", name, summary[:200])
        return f"error: {summary[:200]}"
    return "ok" if note is None else f"ok, but {note}"
