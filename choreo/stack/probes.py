"""Readiness probes shared by the HTTP parts (emulators and services)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from choreo.stack.process import Probe


def http_ok(url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 1.0) -> Probe:
    """A probe that is true when GET `url` answers 200."""

    def probe() -> bool:
        try:
            response = httpx.get(url, headers=headers, timeout=timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == httpx.codes.OK

    return probe
