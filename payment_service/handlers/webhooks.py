"""Stripe's webhooks: each event verified (its `Stripe-Signature`, by the stripe SDK), applied
once (`stripe_events`, keyed by the event id, in the transaction of its effects), and used

- to learn the outcome of a charge that waited for the customer (3-D Secure: the order's
  charge AWAITING_ACTION): `resolve_action` reads the intent and records what it says;
- to reconcile the synchronous path: an intent whose answer never reached the service (a
  timeout, a crash between confirm and commit) leaves its order CHARGING, and the intent's event
  settles the order as a redelivered saga event would (`settle_order`: the intent retrieved,
  its outcome recorded), so it is never charged twice.

The event's own body is never trusted for the outcome: the intent is read from Stripe. Events
about anything else are acknowledged and ignored.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import stripe
from sqlalchemy import Text, Uuid, bindparam, select
from sqlalchemy.dialects.postgresql import insert

from choreo.db import UnitOfWork
from payment_service.domain import ChargeStatus, PaymentError
from payment_service.handlers.saga import (
    Charging,
    load_order_payment,
    resolve_action,
    settle_order,
)
from payment_service.tables import charge_attempts, order_payments, stripe_events

log = logging.getLogger(__name__)

# The statements of every webhook are built once, their values bound on each execution: built
# anew, a statement cost ~125 µs of client CPU per execution, built once ~60 µs (choreo.sql
# compiles each shape once). An INSERT's columns are the keys of the parameters it is executed
# with.

# The events of an intent's outcome (Stripe API reference, "Types of events").
INTENT_EVENTS = frozenset(
    {
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "payment_intent.amount_capturable_updated",
    }
)


class InvalidWebhookError(PaymentError):
    """A webhook whose signature, timestamp or body is not Stripe's."""


class WebhooksNotConfiguredError(PaymentError):
    """No webhook secret is configured (STRIPE_WEBHOOK_SECRET): nothing can be verified."""


class Outcome(StrEnum):
    SETTLED = "settled"  # it moved one of this service's orders on
    IGNORED = "ignored"  # not this service's, or nothing left to do
    DUPLICATE = "duplicate"  # applied before


@dataclass(frozen=True)
class WebhookEvent:
    """A verified Stripe event, as far as the service reads it."""

    id: str
    type: str
    intent_id: str | None
    order_id: str | None
    payment_id: str | None


def verified(
    payload: bytes, signature: str | None, secret: str | None, tolerance_seconds: int
) -> WebhookEvent:
    """The event `payload` holds, once its `Stripe-Signature` is Stripe's (HMAC-SHA256 of
    `timestamp.payload` with the endpoint's secret, the timestamp within `tolerance_seconds`;
    Stripe's "Verify webhook signatures"). Raises WebhooksNotConfiguredError without a secret,
    InvalidWebhookError otherwise."""
    if secret is None:
        raise WebhooksNotConfiguredError("no webhook secret is configured (STRIPE_WEBHOOK_SECRET)")
    if not signature:
        raise InvalidWebhookError("no Stripe-Signature header")
    try:
        # The SDK's own check, without building its objects of the whole event (the parse
        # below reads the four fields used, at a fraction of the cost).
        stripe.WebhookSignature.verify_header(payload, signature, secret, tolerance_seconds)
        whole = json.loads(payload)
    except stripe.SignatureVerificationError:
        raise InvalidWebhookError("the Stripe-Signature does not match this endpoint") from None
    except ValueError:
        raise InvalidWebhookError("the body is not a Stripe event") from None
    if not isinstance(whole, dict):
        raise InvalidWebhookError("the body is not a Stripe event")
    found = _mapping(_mapping(whole.get("data")).get("object"))
    metadata = _mapping(found.get("metadata"))
    is_intent = found.get("object") == "payment_intent"
    return WebhookEvent(
        id=str(whole.get("id") or ""),
        type=str(whole.get("type") or ""),
        intent_id=str(found.get("id")) if is_intent else None,
        order_id=_text(metadata.get("order_id")),
        payment_id=_text(metadata.get("payment_id")),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _mapping(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (a field of another shape names
    nothing the service reads)."""
    return value if isinstance(value, dict) else {}


class _DuplicateError(Exception):
    """The event was applied before: its unit of work rolls back."""


# The event's row, written with its effects; none returned: a concurrent delivery's came first.
_RECORD_EVENT = insert(stripe_events).on_conflict_do_nothing().returning(stripe_events.c.id)


async def apply_once(uow: UnitOfWork, charging: Charging, event: WebhookEvent) -> Outcome:
    """Apply `event` once: what it changes and its `stripe_events` row commit together; an
    event applied before (or by a concurrent delivery that committed first) changes nothing."""
    if not event.id:
        raise InvalidWebhookError("the event has no id")
    try:
        async with uow:
            outcome = await _outcome(uow, charging, event)
            recorded = await uow.session.execute(
                _RECORD_EVENT, {"id": event.id, "type": event.type, "outcome": outcome.value}
            )
            if recorded.first() is None:
                raise _DuplicateError
    except _DuplicateError:
        return Outcome.DUPLICATE
    log.info("stripe event %s (%s): %s", event.id, event.type, outcome.value)
    return outcome


# Whether the event was applied before, and the order's recorded charge with the intent of its
# phase one, in one statement (two before; issue 14): `wanted` is the one row the left joins hang
# on, so an unknown event or order still gives one row.
_WANTED = select(
    bindparam("event_id", type_=Text).label("event_id"),
    bindparam("order_id", type_=Uuid).label("order_id"),
).subquery("wanted")
_SEEN_AND_ORDER_CHARGE = select(
    stripe_events.c.id.label("seen"),
    order_payments.c.payment_id,
    order_payments.c.status,
    order_payments.c.provider_payment_id,
    charge_attempts.c.provider_payment_id.label("attempt"),
).select_from(
    _WANTED.outerjoin(stripe_events, stripe_events.c.id == _WANTED.c.event_id)
    .outerjoin(order_payments, order_payments.c.order_id == _WANTED.c.order_id)
    .outerjoin(charge_attempts, charge_attempts.c.order_id == order_payments.c.order_id)
)


def _order_key(event: WebhookEvent) -> uuid.UUID | None:
    """The order an intent event of this service's names, else None."""
    if event.type not in INTENT_EVENTS or event.intent_id is None or event.order_id is None:
        return None
    try:
        return uuid.UUID(event.order_id)
    except ValueError:
        return None


async def _outcome(uow: UnitOfWork, charging: Charging, event: WebhookEvent) -> Outcome:
    order_id = _order_key(event)
    # Usually the charge's outcome is recorded already: read without a lock first.
    row = (
        await uow.session.execute(
            _SEEN_AND_ORDER_CHARGE, {"event_id": event.id, "order_id": order_id}
        )
    ).one()
    if row.seen is not None:
        raise _DuplicateError
    if order_id is None:
        return Outcome.IGNORED
    if row.payment_id is None or str(row.payment_id) != event.payment_id:
        return Outcome.IGNORED  # another system's intent on the same account
    if row.status == ChargeStatus.AWAITING_ACTION.value:
        if row.provider_payment_id != event.intent_id:
            return Outcome.IGNORED
        # The customer authenticated, or failed to: `resolve_action` locks the row, reads the
        # intent from Stripe and records its outcome (nothing if it still waits).
        resolved = await resolve_action(uow, order_id, charging)
        return Outcome.SETTLED if resolved else Outcome.IGNORED
    if row.status != ChargeStatus.NONE.value or row.attempt != event.intent_id:
        return Outcome.IGNORED  # its outcome is recorded (the usual case), or not its charge
    # CHARGING with this intent: look again under the row's lock (a handler may hold it,
    # recording the outcome right now).
    payment = await load_order_payment(uow.session, order_id)
    if payment.facts.status is not ChargeStatus.CHARGING or (
        payment.attempt_payment_id != event.intent_id
    ):
        return Outcome.IGNORED
    log.warning("order %s: charge %s settled by its webhook", order_id, event.intent_id)
    await settle_order(uow, order_id, charging, None)
    return Outcome.SETTLED
