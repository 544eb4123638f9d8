"""One factory per event record, for tests: each returns the record in its envelope
(`choreo.events.Event`: a new id, now, no source) with every field given or defaulted.

Defaults are valid and unremarkable: new UUIDs for ids, now for times, an order of two lines of
12.50 USD each (amounts in cents), a deadline 15 minutes ahead. Give what the test is about;
`publish` signs each event as the owner of its topic would.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from choreo.events import Event
from choreo.records import (
    LowStockDetected,
    NotificationPreference,
    NotificationPreferencesChanged,
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    OrderLine,
    PasswordResetRequested,
    PaymentActionRequired,
    PaymentFailed,
    PaymentRefunded,
    PaymentSucceeded,
    RiskAssessed,
    RiskReason,
    SessionsRevoked,
    StockLevelChanged,
    StockLine,
    StockRejected,
    StockReleased,
    StockReserved,
    UserDeleted,
    UserRegistered,
    UserUpdated,
)

UNIT_PRICE = 1250
"""Cents: the price of each line's product unless a test says otherwise."""


def new_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    """Now, to the millisecond: what `timestamp-millis` keeps of a time."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def order_lines(*quantities: int, unit_price: int = UNIT_PRICE) -> tuple[OrderLine, ...]:
    """One line of a new product for each quantity."""
    return tuple(
        OrderLine(product_id=new_id(), quantity=quantity, unit_price=unit_price)
        for quantity in quantities
    )


def stock_lines(lines: Sequence[OrderLine | StockLine]) -> tuple[StockLine, ...]:
    return tuple(StockLine(product_id=line.product_id, quantity=line.quantity) for line in lines)


def order_created(
    *,
    order_id: str | None = None,
    user_id: str | None = None,
    items: Sequence[OrderLine] | None = None,
    total_amount: int | None = None,
    currency: str = "USD",
    payment_method_id: str | None = None,
    deadline: datetime | None = None,
    created_at: datetime | None = None,
    client_ip: str | None = None,
) -> Event[OrderCreated]:
    """`total_amount` defaults to the sum of the lines."""
    lines = tuple(items) if items is not None else order_lines(1, 2)
    created = created_at or _now()
    return Event(
        OrderCreated(
            order_id=order_id or new_id(),
            user_id=user_id or new_id(),
            items=lines,
            total_amount=(
                total_amount
                if total_amount is not None
                else sum(line.quantity * line.unit_price for line in lines)
            ),
            currency=currency,
            payment_method_id=payment_method_id,
            deadline=deadline or created + timedelta(minutes=15),
            created_at=created,
            client_ip=client_ip,
        )
    )


def order_confirmed(
    *,
    order_id: str | None = None,
    user_id: str | None = None,
    total_amount: int = 3 * UNIT_PRICE,
    currency: str = "USD",
    confirmed_at: datetime | None = None,
) -> Event[OrderConfirmed]:
    return Event(
        OrderConfirmed(
            order_id=order_id or new_id(),
            user_id=user_id or new_id(),
            total_amount=total_amount,
            currency=currency,
            confirmed_at=confirmed_at or _now(),
        )
    )


def order_cancelled(
    *,
    order_id: str | None = None,
    user_id: str | None = None,
    reason: str = "PAYMENT_FAILED",
    previous_status: str = "RESERVED",
    charged: bool = False,
    cancelled_at: datetime | None = None,
) -> Event[OrderCancelled]:
    return Event(
        OrderCancelled(
            order_id=order_id or new_id(),
            user_id=user_id or new_id(),
            reason=reason,
            previous_status=previous_status,
            charged=charged,
            cancelled_at=cancelled_at or _now(),
        )
    )


def stock_reserved(
    *,
    order_id: str | None = None,
    items: Sequence[StockLine] | None = None,
    reserved_at: datetime | None = None,
) -> Event[StockReserved]:
    return Event(
        StockReserved(
            order_id=order_id or new_id(),
            items=tuple(items) if items is not None else stock_lines(order_lines(1)),
            reserved_at=reserved_at or _now(),
        )
    )


def stock_rejected(
    *,
    order_id: str | None = None,
    reason: str = "INSUFFICIENT_STOCK",
    unavailable_product_ids: Sequence[str] = (),
    rejected_at: datetime | None = None,
) -> Event[StockRejected]:
    return Event(
        StockRejected(
            order_id=order_id or new_id(),
            reason=reason,
            unavailable_product_ids=tuple(unavailable_product_ids),
            rejected_at=rejected_at or _now(),
        )
    )


def stock_released(
    *,
    order_id: str | None = None,
    items: Sequence[StockLine] | None = None,
    reason: str = "PAYMENT_FAILED",
    released_at: datetime | None = None,
) -> Event[StockReleased]:
    return Event(
        StockReleased(
            order_id=order_id or new_id(),
            items=tuple(items) if items is not None else stock_lines(order_lines(1)),
            reason=reason,
            released_at=released_at or _now(),
        )
    )


def stock_level_changed(
    *,
    product_id: str | None = None,
    available: int = 10,
    reserved: int = 0,
    sold: int = 0,
    changed_at: datetime | None = None,
) -> Event[StockLevelChanged]:
    return Event(
        StockLevelChanged(
            product_id=product_id or new_id(),
            available=available,
            reserved=reserved,
            sold=sold,
            changed_at=changed_at or _now(),
        )
    )


def low_stock_detected(
    *,
    product_id: str | None = None,
    product_name: str = "Trail shoe",
    available: int = 2,
    threshold: int = 5,
    detected_at: datetime | None = None,
) -> Event[LowStockDetected]:
    return Event(
        LowStockDetected(
            product_id=product_id or new_id(),
            product_name=product_name,
            available=available,
            threshold=threshold,
            detected_at=detected_at or _now(),
        )
    )


def payment_succeeded(
    *,
    order_id: str | None = None,
    payment_id: str | None = None,
    amount: int = 3 * UNIT_PRICE,
    currency: str = "USD",
    provider_payment_id: str = "pi_test",
    succeeded_at: datetime | None = None,
) -> Event[PaymentSucceeded]:
    return Event(
        PaymentSucceeded(
            order_id=order_id or new_id(),
            payment_id=payment_id or new_id(),
            amount=amount,
            currency=currency,
            provider_payment_id=provider_payment_id,
            succeeded_at=succeeded_at or _now(),
        )
    )


def payment_failed(
    *,
    order_id: str | None = None,
    payment_id: str | None = None,
    amount: int = 3 * UNIT_PRICE,
    currency: str = "USD",
    decline_code: str = "card_declined",
    message: str = "Your card was declined.",
    failed_at: datetime | None = None,
) -> Event[PaymentFailed]:
    return Event(
        PaymentFailed(
            order_id=order_id or new_id(),
            payment_id=payment_id,
            amount=amount,
            currency=currency,
            decline_code=decline_code,
            message=message,
            failed_at=failed_at or _now(),
        )
    )


def payment_refunded(
    *,
    order_id: str | None = None,
    payment_id: str | None = None,
    refund_id: str | None = None,
    provider_refund_id: str = "re_test",
    amount: int = 3 * UNIT_PRICE,
    currency: str = "USD",
    refunded_at: datetime | None = None,
) -> Event[PaymentRefunded]:
    return Event(
        PaymentRefunded(
            order_id=order_id or new_id(),
            payment_id=payment_id or new_id(),
            refund_id=refund_id or new_id(),
            provider_refund_id=provider_refund_id,
            amount=amount,
            currency=currency,
            refunded_at=refunded_at or _now(),
        )
    )


def risk_assessed(
    *,
    order_id: str | None = None,
    user_id: str | None = None,
    decision: str = "APPROVE",
    score: int = 0,
    reasons: Sequence[RiskReason] = (),
    review_expires_at: datetime | None = None,
    assessed_at: datetime | None = None,
) -> Event[RiskAssessed]:
    return Event(
        RiskAssessed(
            order_id=order_id or new_id(),
            user_id=user_id or new_id(),
            decision=decision,
            score=score,
            reasons=tuple(reasons),
            review_expires_at=review_expires_at,
            assessed_at=assessed_at or _now(),
        )
    )


def payment_action_required(
    *,
    order_id: str | None = None,
    payment_id: str | None = None,
    amount: int = UNIT_PRICE,
    currency: str = "USD",
    provider_payment_id: str = "pi_test_3ds",
    client_secret: str = "pi_test_3ds_secret_test",
    required_at: datetime | None = None,
) -> Event[PaymentActionRequired]:
    return Event(
        PaymentActionRequired(
            order_id=order_id or new_id(),
            payment_id=payment_id or new_id(),
            amount=amount,
            currency=currency,
            provider_payment_id=provider_payment_id,
            client_secret=client_secret,
            next_action_type="use_stripe_sdk",
            required_at=required_at or _now(),
        )
    )


def user_registered(
    *,
    user_id: str | None = None,
    email: str = "ada@example.com",
    full_name: str = "Ada Lovelace",
    role: str = "customer",
    registered_at: datetime | None = None,
) -> Event[UserRegistered]:
    return Event(
        UserRegistered(
            user_id=user_id or new_id(),
            email=email,
            full_name=full_name,
            role=role,
            registered_at=registered_at or _now(),
        )
    )


def user_updated(
    *,
    user_id: str | None = None,
    email: str = "ada@example.com",
    full_name: str = "Ada Lovelace",
    phone: str | None = None,
    updated_at: datetime | None = None,
) -> Event[UserUpdated]:
    return Event(
        UserUpdated(
            user_id=user_id or new_id(),
            email=email,
            full_name=full_name,
            phone=phone,
            updated_at=updated_at or _now(),
        )
    )


def user_deleted(
    *, user_id: str | None = None, deleted_at: datetime | None = None
) -> Event[UserDeleted]:
    return Event(UserDeleted(user_id=user_id or new_id(), deleted_at=deleted_at or _now()))


def password_reset_requested(
    *,
    user_id: str | None = None,
    email: str = "ada@example.com",
    full_name: str | None = "Ada Lovelace",
    token: str = "",
    expires_at: datetime | None = None,
    sealed_token: bytes | None = None,
) -> Event[PasswordResetRequested]:
    return Event(
        PasswordResetRequested(
            user_id=user_id or new_id(),
            email=email,
            full_name=full_name,
            token=token,
            expires_at=expires_at or _now() + timedelta(minutes=30),
            sealed_token=sealed_token,
        )
    )


def sessions_revoked(
    *,
    user_id: str | None = None,
    session_ids: Sequence[str] | None = None,
    reason: str = "logged_out",
    revoked_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> Event[SessionsRevoked]:
    revoked = revoked_at or _now()
    return Event(
        SessionsRevoked(
            user_id=user_id or new_id(),
            session_ids=tuple(session_ids) if session_ids is not None else (new_id(),),
            reason=reason,
            revoked_at=revoked,
            expires_at=expires_at or revoked + timedelta(minutes=15),
        )
    )


def notification_preferences_changed(
    *,
    user_id: str | None = None,
    preferences: Sequence[NotificationPreference] | None = None,
    changed_at: datetime | None = None,
) -> Event[NotificationPreferencesChanged]:
    """Preferences as the user service publishes them: by default every kind by e-mail and in
    the app, none by SMS (the defaults)."""
    kinds = ("order_updates", "payment_updates", "account_notices", "low_stock")
    return Event(
        NotificationPreferencesChanged(
            user_id=user_id or new_id(),
            preferences=tuple(preferences)
            if preferences is not None
            else tuple(
                NotificationPreference(kind=kind, email=True, sms=False, in_app=True)
                for kind in kinds
            ),
            changed_at=changed_at or _now(),
        )
    )
