"""Intents the provider holds open for this service's orders, settled or cancelled by the
open-intent sweep (docs/saga.md): orphans of a crash between creating an intent and committing
its id, charges whose outcome was never recorded, and the declined intents of failed charges.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy import select

from choreo.db import UnitOfWork, UnitOfWorkFactory
from payment_service.domain import OpenIntentStep, open_intent_step
from payment_service.handlers.saga import Charging, load_order_payment, settle_order
from payment_service.stripe_client import OpenIntent
from payment_service.tables import order_payments

log = logging.getLogger(__name__)


async def settle_open_intents(
    uow_factory: UnitOfWorkFactory, charging: Charging, *, grace: timedelta
) -> int:
    """One pass over the intents open at the provider older than `grace`; how many it settled
    or cancelled. Each is handled in a unit of work of its own, so one failing (the provider
    away, say) holds back no other; it is tried again at the next pass."""
    cutoff = charging.now() - grace
    acted = 0
    for listed in await charging.gateway.open_intents():
        if listed.created > cutoff:
            continue
        try:
            async with uow_factory() as uow:
                step = await _settle_open_intent(uow, listed, charging)
        except Exception:
            log.exception("intent %s of order %s: not settled", listed.intent.id, listed.order_id)
            continue
        if step in (OpenIntentStep.SETTLE, OpenIntentStep.CANCEL):
            acted += 1
    if acted:
        log.info("settled or cancelled %d open intent(s)", acted)
    return acted


async def _settle_open_intent(
    uow: UnitOfWork, listed: OpenIntent, charging: Charging
) -> OpenIntentStep | None:
    """Settle or cancel one listed intent under its order's row lock; None: not ours to touch,
    or its order is being settled right now (the next pass looks again)."""
    try:
        order_id = uuid.UUID(listed.order_id)
    except ValueError:
        return None
    # SKIP LOCKED: a handler holding the row may be between creating this very intent and
    # committing its id; once the row is ours, whatever it committed is visible.
    locked = await uow.session.execute(
        select(order_payments.c.payment_id)
        .where(order_payments.c.order_id == order_id)
        .with_for_update(skip_locked=True)
    )
    payment_id = locked.scalar_one_or_none()
    if payment_id is None or str(payment_id) != listed.payment_id:
        # Not an order of this service (another system on the same account), or held.
        return None
    payment = await load_order_payment(uow.session, order_id)
    # Where it stands now: the list was read before the lock.
    intent = await charging.gateway.retrieve_intent(listed.intent.id)
    step = open_intent_step(
        intent.state,
        is_attempt=intent.id == payment.attempt_payment_id,
        status=payment.facts.status,
    )
    if step is OpenIntentStep.LEAVE:
        return step
    log.warning(
        "order %s: open intent %s (%s, order %s): %s",
        order_id,
        intent.id,
        intent.state.value,
        payment.facts.status.value,
        step.value,
    )
    if step is OpenIntentStep.SETTLE:
        await settle_order(uow, order_id, charging, None)
    else:
        await charging.gateway.cancel_intent(intent.id)
    return step
