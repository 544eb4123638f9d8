"""Who gets past the gateway: the bearer token check and the rate limits, in one step.

Every request is counted against its client address, and, when it carries a valid token,
against its user too; only then is a missing or invalid token refused (so a flood of bad
tokens is limited like any other). Public routes pass without a token; a token they carry is
forwarded either way, for the service to read (an admin sees more of the catalog).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from prometheus_client import Counter

from choreo.auth import Principal
from choreo.deps import current_principal
from choreo.web import ApiError
from gateway_service.domain import Admission, Limit, client_address
from gateway_service.ratelimit import Charge, RateLimiter

RATE_LIMITED = Counter("gateway_rate_limited", "Requests the gateway refused with 429.")


@dataclass(frozen=True)
class Gatekeeper:
    limiter: RateLimiter
    user_limit: Limit
    address_limit: Limit
    trust_forwarded: bool

    def address_of(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return client_address(
            peer, request.headers.get("x-forwarded-for"), trust_forwarded=self.trust_forwarded
        )

    async def admit(self, request: Request, *, public: bool) -> Admission | None:
        """The rate-limit state to report, or None when the limits could not be checked.

        Raises the 429, 401 or 503 (keys unavailable) envelope for a request that may not pass.
        """
        principal: Principal | None = None
        refusal: ApiError | None = None
        if not public or "authorization" in request.headers:
            try:
                principal = await current_principal(request)
            except ApiError as error:  # 401, or 503 when the signing keys are unavailable
                refusal = error
        charges: list[Charge] = [(f"address:{self.address_of(request)}", self.address_limit)]
        if principal is not None:
            charges.append((f"user:{principal.user_id}", self.user_limit))
        admission = await self.limiter.admit(charges)
        if admission is not None and not admission.allowed:
            RATE_LIMITED.inc()
            raise ApiError(
                429,
                "rate_limited",
                f"Too many requests: try again in {admission.retry_after_header} s.",
                headers={"Retry-After": admission.retry_after_header, **limit_headers(admission)},
            )
        if refusal is not None and not public:
            raise refusal
        return admission

    async def aclose(self) -> None:
        await self.limiter.aclose()


def limit_headers(admission: Admission | None) -> dict[str, str]:
    if admission is None:
        return {}
    return {
        "X-RateLimit-Limit": str(admission.limit),
        "X-RateLimit-Remaining": str(admission.remaining),
    }
