"""Readiness probes shared by the HTTP parts (emulators and services)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from choreo.stack.process import Probe

PROBE_USER_AGENT = "choreo-probe"
"""The probes' User-Agent, by which the emulators leave them out of their access logs."""


def http_ok(url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 1.0) -> Probe:
    """A probe that is true when GET `url` answers 200.

    Its client is built once (building one costs ~30 ms of CPU, and the supervisor probes every
    part every few seconds) and keeps no connection alive, so each probe connects afresh, as a
    new client would: a server that serves its old connections but refuses new ones is not ready.
    """
    client = httpx.Client(
        headers={"User-Agent": PROBE_USER_AGENT, **(headers or {})},
        timeout=timeout,
        limits=httpx.Limits(max_keepalive_connections=0),
        trust_env=False,  # a loopback probe never goes through a proxy
    )

    def probe() -> bool:
        try:
            response = client.get(url)
        except httpx.HTTPError:
            return False
        return response.status_code == httpx.codes.OK

    return probe
