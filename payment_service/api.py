"""The payment service's HTTP API: the card vault (a user's own cards) and payment lists.

A card is added as the PaymentMethod id the client got from Stripe; raw card details only in
dev and test (`domain.CardIntake`). They are validated here and in the domain without ever
being quoted back: an error names the field and what is wrong with it, never the value.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Self

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from choreo.deps import AdminUser, CurrentUser, Uow, resource
from choreo.web import ApiError
from payment_service import handlers, queries
from payment_service.domain import (
    CardDeclinedError,
    CardIntake,
    CardRejectedError,
    PaymentMethodNotFoundError,
    check_card,
)
from payment_service.gateway import NewCard, StripeGateway


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


class PaymentMethodOut(BaseModel):
    id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    is_default: bool


class PaymentMethodPage(BaseModel):
    items: list[PaymentMethodOut]
    next_cursor: str | None


class PaymentOut(BaseModel):
    order_id: str
    payment_id: str
    amount: int
    currency: str
    status: str
    decline_code: str | None
    refunded_amount: int
    created_at: datetime


class AdminPaymentOut(PaymentOut):
    user_id: str


class PaymentPage(BaseModel):
    items: list[PaymentOut]
    next_cursor: str | None


class AdminPaymentPage(BaseModel):
    items: list[AdminPaymentOut]
    next_cursor: str | None


Gateway = Annotated[StripeGateway, Depends(resource("gateway", StripeGateway))]
Intake = Annotated[CardIntake, Depends(resource("card_intake", CardIntake))]

router = APIRouter(prefix="/api/v1", tags=["payments"])


@router.post("/payment-methods", status_code=status.HTTP_201_CREATED)
async def add_payment_method(
    body: PaymentMethodIn, user: CurrentUser, uow: Uow, gateway: Gateway, intake: Intake
) -> PaymentMethodOut:
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
        async with uow:
            customer_id = await handlers.ensure_customer(uow, gateway, user.user_id)
        async with uow:
            method_id = await handlers.add_payment_method(
                uow, gateway, user.user_id, customer_id, card=card, token=body.token
            )
            method = await queries.payment_method(uow.session, user.user_id, method_id)
    except CardRejectedError as error:
        status_code = 402 if isinstance(error, CardDeclinedError) else 422
        raise ApiError(status_code, error.code, str(error)) from None
    return _method_out(method)


@router.get("/payment-methods")
async def list_payment_methods(
    user: CurrentUser, uow: Uow, limit: Limit = 20, cursor: Cursor = None
) -> PaymentMethodPage:
    async with uow:
        page, next_cursor = await queries.payment_methods_of(
            uow.session, user.user_id, limit=limit, cursor=cursor
        )
    return PaymentMethodPage(items=[_method_out(m) for m in page], next_cursor=next_cursor)


@router.delete("/payment-methods/{method_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_payment_method(method_id: str, user: CurrentUser, uow: Uow) -> Response:
    try:
        parsed = uuid.UUID(method_id)
    except ValueError:
        raise PaymentMethodNotFoundError("no such payment method") from None
    async with uow:
        await handlers.delete_payment_method(uow, user.user_id, parsed)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/payments")
async def list_payments(
    user: CurrentUser, uow: Uow, limit: Limit = 20, cursor: Cursor = None
) -> PaymentPage:
    async with uow:
        page, next_cursor = await queries.payments(
            uow.session, user_id=user.user_id, limit=limit, cursor=cursor
        )
    items = [PaymentOut(**_payment_fields(p)) for p in page]
    return PaymentPage(items=items, next_cursor=next_cursor)


@router.get("/admin/payments")
async def list_all_payments(
    admin: AdminUser, uow: Uow, limit: Limit = 20, cursor: Cursor = None
) -> AdminPaymentPage:
    async with uow:
        page, next_cursor = await queries.payments(
            uow.session, user_id=None, limit=limit, cursor=cursor
        )
    items = [AdminPaymentOut(**_payment_fields(p), user_id=p.user_id) for p in page]
    return AdminPaymentPage(items=items, next_cursor=next_cursor)


def _method_out(method: queries.PaymentMethod) -> PaymentMethodOut:
    return PaymentMethodOut(
        id=str(method.id),
        brand=method.brand,
        last4=method.last4,
        exp_month=method.exp_month,
        exp_year=method.exp_year,
        is_default=method.is_default,
    )


def _payment_fields(payment: queries.Payment) -> dict[str, object]:
    return {
        "order_id": str(payment.order_id),
        "payment_id": str(payment.payment_id),
        "amount": payment.amount,
        "currency": payment.currency,
        "status": payment.status,
        "decline_code": payment.decline_code,
        "refunded_amount": payment.refunded_amount,
        "created_at": payment.created_at,
    }
