"""Wiring of the gateway: settings -> upstreams, limits, token check, app (no database, no
events)."""

from __future__ import annotations

import httpx

from choreo.auth import verifier_from_settings
from choreo.service import Service
from choreo.web import ApiDocs
from gateway_service import domain
from gateway_service.api import router
from gateway_service.config import Settings
from gateway_service.domain import CircuitBreaker, Limit
from gateway_service.edge import Gatekeeper
from gateway_service.openapi import ApiCatalog
from gateway_service.proxy import KEEPALIVE_EXPIRY_SECONDS, Proxy, Upstream
from gateway_service.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from gateway_service.service import SERVER_OPTIONS, middleware, ops_router


def build(settings: Settings | None = None) -> Service:
    settings = settings or Settings()
    upstreams = {
        name: Upstream(
            name,
            url,
            CircuitBreaker(
                failure_threshold=settings.breaker_failure_threshold,
                cooldown_seconds=settings.breaker_cooldown_seconds,
            ),
        )
        for name, url in settings.upstream_urls.items()
    }
    proxy = Proxy(
        upstreams,
        timeout_seconds=settings.upstream_timeout_seconds,
        connect_timeout_seconds=settings.upstream_connect_timeout_seconds,
    )
    limiter: RateLimiter = (
        RedisRateLimiter.from_url(settings.redis_url, prefix=settings.rate_limit_prefix)
        if settings.redis_url
        else MemoryRateLimiter()
    )
    gatekeeper = Gatekeeper(
        limiter,
        user_limit=Limit(settings.rate_limit_per_second, settings.rate_limit_burst),
        address_limit=Limit(
            settings.address_rate_limit_per_second, settings.address_rate_limit_burst
        ),
        trust_forwarded=settings.trust_forwarded,
    )
    # The services' OpenAPI documents, fetched at most once a minute, keep httpx: only the
    # proxied requests are worth aiohttp's lower cost.
    catalog_client = httpx.AsyncClient(
        limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS), trust_env=False
    )
    catalog = ApiCatalog(
        catalog_client,
        settings.upstream_urls,
        owns_path=domain.owns_path,
        is_public=domain.is_public,
        ops_token=settings.ops_token.get_secret_value() if settings.ops_token else None,
    )
    return Service(
        settings,
        routers=[ops_router, router],
        middleware=middleware(settings),
        server_options=SERVER_OPTIONS,
        docs=ApiDocs.NONE,  # the merged document and its page are the gateway's routes
        # The proxy's and the catalog's clients are closed when the gateway stops (`aclose`).
        resources={
            "proxy": proxy,
            "gatekeeper": gatekeeper,
            "api_catalog": catalog,
            "api_catalog_client": catalog_client,
        },
        token_verifier=verifier_from_settings(settings.jwks_source_url, settings.jwks_json),
    )


if __name__ == "__main__":
    build().run()
