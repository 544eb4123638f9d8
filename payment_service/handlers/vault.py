"""The card vault's commands: save a card through the provider, delete one. Each opens the
unit of work it is given.

Only the provider's ids, the brand, the last four digits, the expiry and the card's
fingerprint (Stripe's: no number can be derived from it) are stored.
"""

from __future__ import annotations

import uuid

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert

from choreo.db import UnitOfWork
from choreo.sql import Row, Session
from payment_service.domain import InvalidCardError, PaymentMethodNotFoundError
from payment_service.stripe_client import NewCard, StripeGateway
from payment_service.tables import customers, payment_methods


async def ensure_customer(uow: UnitOfWork, gateway: StripeGateway, user_id: str) -> str:
    """The user's customer at the provider, created on first use.

    Committed on its own, before a card is tried: a declined first card keeps the customer.
    """
    async with uow:
        await _lock_vault(uow.session, user_id)
        existing: str | None = await uow.session.scalar(
            select(customers.c.provider_customer_id).where(customers.c.user_id == user_id)
        )
        if existing is not None:
            return existing
        customer_id = await gateway.create_customer(user_id)
        await uow.session.execute(
            insert(customers).values(user_id=user_id, provider_customer_id=customer_id)
        )
    return customer_id


async def add_payment_method(
    uow: UnitOfWork,
    gateway: StripeGateway,
    user_id: str,
    customer_id: str,
    *,
    card: NewCard | None = None,
    token: str | None = None,
) -> uuid.UUID:
    """Save a card (raw details or a provider token) for the user; the first is the default."""
    async with uow:
        session = uow.session
        await _lock_vault(session, user_id)
        if card is not None:
            saved = await gateway.create_payment_method(customer_id, card)
        elif token is not None:
            saved = await gateway.payment_method_from_token(customer_id, token)
        else:
            raise InvalidCardError("invalid_card", "Give either card details or a token.")
        has_default = await session.scalar(
            select(
                exists().where(payment_methods.c.user_id == user_id, payment_methods.c.is_default)
            )
        )
        method_id = uuid.uuid4()
        await session.execute(
            insert(payment_methods).values(
                id=method_id,
                user_id=user_id,
                provider_payment_method_id=saved.provider_payment_method_id,
                brand=saved.brand,
                last4=saved.last4,
                exp_month=saved.exp_month,
                exp_year=saved.exp_year,
                fingerprint=saved.fingerprint,
                is_default=not has_default,
            )
        )
    return method_id


async def delete_payment_method(uow: UnitOfWork, user_id: str, method_id: uuid.UUID) -> None:
    """Forget one of the user's cards; when it was the default, the newest other one is."""
    async with uow:
        session = uow.session
        await _lock_vault(session, user_id)
        deleted: Row | None = (
            await session.execute(
                delete(payment_methods)
                .where(payment_methods.c.id == method_id, payment_methods.c.user_id == user_id)
                .returning(payment_methods.c.is_default)
            )
        ).first()
        if deleted is None:
            raise PaymentMethodNotFoundError(f"no payment method {method_id}")
        if deleted.is_default:
            newest = (
                select(payment_methods.c.id)
                .where(payment_methods.c.user_id == user_id)
                .order_by(payment_methods.c.created_at.desc(), payment_methods.c.id.desc())
                .limit(1)
                .scalar_subquery()
            )
            await session.execute(
                update(payment_methods)
                .where(payment_methods.c.id == newest)
                .values(is_default=True)
            )


async def _lock_vault(session: Session, user_id: str) -> None:
    """Serialize one user's vault changes (first card is default, one provider customer)."""
    await session.execute(
        select(func.pg_advisory_xact_lock(func.hashtextextended(f"vault:{user_id}", 0)))
    )
