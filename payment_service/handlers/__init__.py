"""What the payment service does on each event (saga) and command (vault, risk lists)."""

from payment_service.handlers.intents import settle_open_intents, sweep_open_intents
from payment_service.handlers.reviews import (
    ReviewClosedError,
    ReviewNotFoundError,
    Verdict,
    decide_review,
    expire_reviews,
)
from payment_service.handlers.risk_lists import add_list_entry, remove_list_entry
from payment_service.handlers.saga import (
    Charging,
    on_order_cancelled,
    on_order_created,
    on_stock_reserved,
)
from payment_service.handlers.screening import (
    Screening,
    on_user_registered,
    on_user_updated,
)
from payment_service.handlers.vault import (
    add_payment_method,
    delete_payment_method,
    ensure_customer,
)
from payment_service.handlers.webhooks import (
    InvalidWebhookError,
    WebhookEvent,
    WebhooksNotConfiguredError,
    apply_once,
    verified,
)

__all__ = [
    "Charging",
    "InvalidWebhookError",
    "ReviewClosedError",
    "ReviewNotFoundError",
    "Screening",
    "Verdict",
    "WebhookEvent",
    "WebhooksNotConfiguredError",
    "add_list_entry",
    "add_payment_method",
    "apply_once",
    "decide_review",
    "delete_payment_method",
    "ensure_customer",
    "expire_reviews",
    "on_order_cancelled",
    "on_order_created",
    "on_stock_reserved",
    "on_user_registered",
    "on_user_updated",
    "remove_list_entry",
    "settle_open_intents",
    "sweep_open_intents",
    "verified",
]
