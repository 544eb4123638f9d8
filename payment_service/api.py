"""The payment service's HTTP API: the card vault (a user's own cards), payment lists, and the
risk screening's allow- and block-lists (admins).

A card is added as the PaymentMethod id the client got from Stripe; raw card details only in
dev and test (`domain.CardIntake`). They are validated here and in the domain without ever
being quoted back: an error names the field and what is wrong with it, never the value.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Final, Literal, Self

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from choreo.deps import AdminUser, CurrentUser, Uow, resource
from choreo.pagination import InvalidCursorError
from choreo.web import ApiError
from payment_service import handlers, queries
from payment_service.domain import (
    CardDeclinedError,
    CardIntake,
    CardRejectedError,
    PaymentMethodNotFoundError,
    ProviderError,
    ProviderUnavailableError,
    check_card,
)
from payment_service.handlers import (
    InvalidWebhookError,
    ReviewClosedError,
    ReviewNotFoundError,
    Verdict,
    WebhooksNotConfiguredError,
)
from payment_service.queries import (
    AdminPaymentPage,
    ListEntryPage,
    ListEntryView,
    PaymentMethodPage,
    PaymentMethodView,
    PaymentPage,
    RiskAssessmentNotFoundError,
    RiskAssessmentPage,
    RiskAssessmentView,
)
from payment_service.risk import (
    InvalidListEntryError,
    ListAction,
    ListEntry,
    ListEntryExistsError,
    ListEntryNotFoundError,
    ListKind,
)
from payment_service.stripe_client import NewCard, StripeGateway

log = logging.getLogger(__name__)

# Domain errors whose message says it all; main.py hands these to the kit's error handler.
ERROR_STATUSES: Final[dict[type[Exception], tuple[int, str]]] = {
    PaymentMethodNotFoundError: (404, "payment_method_not_found"),
    ProviderUnavailableError: (503, "payment_provider_unavailable"),
    ProviderError: (502, "payment_provider_error"),
    InvalidCursorError: (422, "invalid_cursor"),
    InvalidListEntryError: (422, "invalid_list_entry"),
    ListEntryExistsError: (409, "list_entry_exists"),
    ListEntryNotFoundError: (404, "list_entry_not_found"),
    RiskAssessmentNotFoundError: (404, "risk_assessment_not_found"),
    ReviewNotFoundError: (404, "review_not_found"),
    ReviewClosedError: (409, "review_closed"),
    InvalidWebhookError: (400, "invalid_signature"),
    WebhooksNotConfiguredError: (503, "webhooks_not_configured"),
}


def _digits_only(value: object) -> object:
    """Card numbers are often typed with spaces or dashes between groups of digits."""
    return re.sub(r"[ -]", "", value) if isinstance(value, str) else value


CardNumber = Annotated[
    str, BeforeValidator(_digits_only), StringConstraints(pattern=r"^[0-9]{12,19}$")
]
Cvc = Annotated[str, StringConstraints(pattern=r"^[0-9]{3,4}$")]
Token = Annotated[str, StringConstraints(pattern=r"^(pm|tok)_[A-Za-z0-9_]{1,200}$")]
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=500)]


class CardIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: CardNumber
    exp_month: Annotated[int, Field(strict=True, ge=1, le=12)]
    exp_year: Annotated[int, Field(strict=True, ge=2000, le=2100)]
    cvc: Cvc


class PaymentMethodIn(BaseModel):
    """A card to save: the PaymentMethod id the client got from Stripe (`token`), or, in dev and
    test only, the card's details (`card`)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"token": "pm_card_visa"}]}
    )

    card: CardIn | None = Field(
        default=None,
        description="Raw card details: taken only in dev and test (Stripe's test cards); "
        "in production refused with 422 `card_numbers_refused`, send `token` instead.",
    )
    token: Token | None = Field(
        default=None,
        description="The Stripe PaymentMethod id (`pm_...`) the client created with Stripe.js "
        "or a mobile SDK, so that the card number never reaches this API; a legacy card "
        "token (`tok_...`) is taken too.",
    )

    @model_validator(mode="after")
    def _card_or_token(self) -> Self:
        if (self.card is None) == (self.token is None):
            raise ValueError("give either card or token")
        return self


class ListEntryIn(BaseModel):
    """A value to put on the allow-list (its charges are approved whatever the rules say) or
    the block-list (declined)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"kind": "ip", "value": "203.0.113.7", "action": "block"}]},
    )

    kind: ListKind = Field(
        description="`card_fingerprint` (Stripe's card.fingerprint), `email`, `ip` or "
        "`customer` (a user id)."
    )
    value: Annotated[str, StringConstraints(min_length=1, max_length=320)] = Field(
        description="Compared case-folded for an e-mail and in canonical form for an IP "
        "address (RFC 5952), as stored."
    )
    action: ListAction
    note: Annotated[str, StringConstraints(max_length=500)] | None = Field(
        default=None, description="Why, for the next admin."
    )


@dataclass(frozen=True, slots=True)
class WebhookAck:
    """The webhook was verified: `outcome` is `settled` (it moved an order on), `ignored`
    (not this service's, or already recorded) or `duplicate` (applied before)."""

    received: bool
    outcome: str


@dataclass(frozen=True)
class WebhookVerification:
    """The endpoint's secret (None: not configured) and the clock tolerance, in seconds."""

    secret: str | None
    tolerance_seconds: int


class ReviewIn(BaseModel):
    """An admin's verdict on a held order."""

    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, StringConstraints(max_length=1000)] | None = Field(
        default=None, description="Why, kept with the review."
    )


ReviewStatus = Literal["OPEN", "APPROVED", "REJECTED", "EXPIRED", "VOIDED"]

Gateway = Annotated[StripeGateway, Depends(resource("gateway", StripeGateway))]
ChargingDep = Annotated[handlers.Charging, Depends(resource("charging", handlers.Charging))]
Verification = Annotated[
    WebhookVerification, Depends(resource("webhook_verification", WebhookVerification))
]
Intake = Annotated[CardIntake, Depends(resource("card_intake", CardIntake))]

router = APIRouter(prefix="/api/v1", tags=["payments"])


@router.post("/payment-methods", status_code=status.HTTP_201_CREATED)
async def add_payment_method(
    body: PaymentMethodIn, user: CurrentUser, uow: Uow, gateway: Gateway, intake: Intake
) -> PaymentMethodView:
    """Save a card for the caller: the first is the default.

    Tokenize the card in the client with Stripe (Stripe.js or a mobile SDK) and send the
    PaymentMethod id, `{"token": "pm_..."}`: the card number then never reaches this API.
    Raw card details (`card`) are taken only in dev and test; production refuses them with 422
    `card_numbers_refused`. A card the provider declines is 402 `card_declined`.
    """
    card = None
    try:
        if body.card is not None:
            intake.check_card_numbers()
            card = NewCard(
                number=body.card.number,
                exp_month=body.card.exp_month,
                exp_year=body.card.exp_year,
                cvc=body.card.cvc,
            )
            check_card(card.number, card.exp_month, card.exp_year, datetime.now(UTC).date())
        customer_id = await handlers.ensure_customer(uow, gateway, user.user_id)
        method_id = await handlers.add_payment_method(
            uow, gateway, user.user_id, customer_id, card=card, token=body.token
        )
    except CardRejectedError as error:
        status_code = 402 if isinstance(error, CardDeclinedError) else 422
        raise ApiError(status_code, error.code, str(error)) from None
    return await queries.payment_method(uow, user.user_id, method_id)


@router.get("/payment-methods")
async def list_payment_methods(
    user: CurrentUser, uow: Uow, limit: Limit = 20, cursor: Cursor = None
) -> PaymentMethodPage:
    return await queries.payment_methods_of(uow, user.user_id, limit=limit, cursor=cursor)


@router.delete("/payment-methods/{method_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_payment_method(method_id: str, user: CurrentUser, uow: Uow) -> Response:
    try:
        parsed = uuid.UUID(method_id)
    except ValueError:
        raise PaymentMethodNotFoundError("no such payment method") from None
    await handlers.delete_payment_method(uow, user.user_id, parsed)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/payments")
async def list_payments(
    user: CurrentUser, uow: Uow, limit: Limit = 20, cursor: Cursor = None
) -> PaymentPage:
    return await queries.payments_of(uow, user.user_id, limit=limit, cursor=cursor)


@router.get("/admin/payments")
async def list_all_payments(
    admin: AdminUser, uow: Uow, limit: Limit = 20, cursor: Cursor = None
) -> AdminPaymentPage:
    return await queries.all_payments(uow, limit=limit, cursor=cursor)


@router.post("/admin/risk/lists", status_code=status.HTTP_201_CREATED)
async def add_list_entry(body: ListEntryIn, admin: AdminUser, uow: Uow) -> ListEntryView:
    """Put a value on the allow- or block-list. A value is on one list at a time: one already
    listed is 409 `list_entry_exists` (delete its entry first to move it)."""
    entry = ListEntry.of(body.kind, body.value, body.action)
    entry_id = await handlers.add_list_entry(uow, entry, note=body.note, actor_id=admin.user_id)
    return await queries.list_entry(uow, entry_id)


@router.get("/admin/risk/lists")
async def list_list_entries(
    admin: AdminUser,
    uow: Uow,
    kind: ListKind | None = None,
    action: ListAction | None = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> ListEntryPage:
    return await queries.list_entries(uow, kind=kind, action=action, limit=limit, cursor=cursor)


@router.delete("/admin/risk/lists/{entry_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_list_entry(entry_id: str, admin: AdminUser, uow: Uow) -> Response:
    try:
        parsed = uuid.UUID(entry_id)
    except ValueError:
        raise ListEntryNotFoundError("no such list entry") from None
    await handlers.remove_list_entry(uow, parsed)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/admin/orders/{order_id}/risk")
async def get_risk_assessment(
    order_id: uuid.UUID, admin: AdminUser, uow: Uow
) -> RiskAssessmentView:
    """Why the risk screening decided as it did on the order's charge: every rule that
    matched, in precedence order, with its points and what it read (`counters`: the values
    at decision time; null when the check could not run), and the review of a held order.
    404 `risk_assessment_not_found` for an order never screened (it ended before its charge)."""
    return await queries.risk_assessment(uow, order_id)


@router.get("/admin/reviews")
async def list_reviews(
    admin: AdminUser,
    uow: Uow,
    status: ReviewStatus | None = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> RiskAssessmentPage:
    """The review queue, oldest first: `?status=OPEN` for the orders awaiting a decision."""
    return await queries.reviews(uow, status=status, limit=limit, cursor=cursor)


@router.post("/admin/reviews/{order_id}/approve")
async def approve_review(
    order_id: uuid.UUID,
    admin: AdminUser,
    uow: Uow,
    charging: ChargingDep,
    body: ReviewIn | None = None,
) -> RiskAssessmentView:
    """Approve a held order: its card's authorisation is captured and the order goes on to
    CONFIRMED. Approving again changes nothing (one capture); 409 `review_closed` once it was
    rejected or expired, 404 `review_not_found` for an order never held."""
    await handlers.decide_review(
        uow,
        charging,
        order_id,
        Verdict.APPROVE,
        admin_id=admin.user_id,
        note=None if body is None else body.note,
    )
    return await queries.risk_assessment(uow, order_id)


@router.post("/admin/reviews/{order_id}/reject")
async def reject_review(
    order_id: uuid.UUID,
    admin: AdminUser,
    uow: Uow,
    charging: ChargingDep,
    body: ReviewIn | None = None,
) -> RiskAssessmentView:
    """Reject a held order: the authorisation is cancelled (nothing charged), the order is
    cancelled (PAYMENT_FAILED, `review_rejected`), its stock released and the customer told.
    Rejecting again changes nothing; 409 `review_closed` once it was approved."""
    await handlers.decide_review(
        uow,
        charging,
        order_id,
        Verdict.REJECT,
        admin_id=admin.user_id,
        note=None if body is None else body.note,
    )
    return await queries.risk_assessment(uow, order_id)


@router.post("/webhooks/stripe")
async def stripe_webhook(
    request: Request, uow: Uow, charging: ChargingDep, verification: Verification
) -> WebhookAck:
    """Stripe's webhook endpoint (no token: Stripe signs each delivery). The `Stripe-Signature`
    is verified with the endpoint's secret (STRIPE_WEBHOOK_SECRET) and a clock tolerance;
    400 `invalid_signature` otherwise, and nothing is applied; 503 `webhooks_not_configured`
    without a secret. Each Stripe event is applied once; an intent's event settles its order
    when the charge's answer never reached the service, and anything else is acknowledged."""
    payload = await request.body()
    try:
        event = handlers.verified(
            payload,
            request.headers.get("stripe-signature"),
            verification.secret,
            verification.tolerance_seconds,
        )
    except InvalidWebhookError as error:
        log.warning("webhook refused: %s", error)
        raise
    outcome = await handlers.apply_once(uow, charging, event)
    return WebhookAck(received=True, outcome=outcome.value)
