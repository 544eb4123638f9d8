"""Intents the provider holds open for this service's orders, settled or cancelled by the
open-intent sweep (docs/saga.md): orphans of a crash between creating an intent and committing
its id, charges whose outcome was never recorded, and the declined intents of failed charges.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import insert

from choreo.db import UnitOfWork, UnitOfWorkFactory
from payment_service.domain import OpenIntentStep, open_intent_step
from payment_service.handlers.saga import (
    Charging,
    load_order_payment,
    resolve_action,
    settle_order,
)
from payment_service.stripe_client import OpenIntent
from payment_service.tables import intent_sweeps, order_payments

log = logging.getLogger(__name__)


CLOCK_MARGIN = timedelta(seconds=10)
"""How far before the last pass's cutoff (its start less the grace) the next pass lists from
when nothing held it back. A pass lists only the intents created up to its cutoff, by the
provider's clock, so one created after the pass, or too young for it, is listed by the next
if the provider's clock is no more than the grace plus this margin behind this host's (70 s
with the default grace; seconds at most with both on NTP). Every intent in the margin is listed
twice, so it is short: with a minute, and young intents listed too, each intent was read by two
passes (the payment service parsed, and the emulator served, each twice; issue 14), and a
restart after a run at 10 orders/s listed ~3,000 intents in its first pass."""


@dataclass(frozen=True)
class SweepPass:
    """What one pass did: `acted` intents settled or cancelled; `resume_from`, the creation
    time the next pass lists from (every open intent created before it is settled, cancelled,
    or not this service's)."""

    acted: int
    resume_from: datetime


async def settle_open_intents(
    uow_factory: UnitOfWorkFactory,
    charging: Charging,
    *,
    grace: timedelta,
    since: datetime | None = None,
) -> SweepPass:
    """One pass over the intents open at the provider, created at or after `since` (all when
    None: a process's first pass), older than `grace`. Each is handled in a unit of work of
    its own, so one failing (the provider away, say) holds back no other; it is tried again at
    the next pass.

    Only intents created up to the cutoff (this pass's start less `grace`) are listed: a
    younger one is the next pass's. The next pass lists from the oldest intent this one left
    open for later (held by a handler, undecided at the provider, failed), else from the
    cutoff less `CLOCK_MARGIN`: so each intent is read by about one pass, not every intent
    ever created (10,000 orders behind it made each pass page through 10,000 intents)."""
    started = charging.now()
    cutoff = started - grace
    acted = 0
    again: list[datetime] = []  # creation times of intents to look at next time
    listing = await charging.gateway.open_intents(created_since=since, created_until=cutoff)
    for listed in listing:
        if listed.created > cutoff:
            again.append(listed.created)
            continue
        try:
            async with uow_factory() as uow:
                step = await _settle_open_intent(uow, listed, charging)
        except Exception:
            log.exception("intent %s of order %s: not settled", listed.intent.id, listed.order_id)
            again.append(listed.created)
            continue
        if step in (OpenIntentStep.SETTLE, OpenIntentStep.CANCEL, OpenIntentStep.RESOLVE):
            acted += 1
        elif step is OpenIntentStep.LEAVE:
            again.append(listed.created)
    if acted:
        log.info("settled or cancelled %d open intent(s)", acted)
    return SweepPass(acted, min(again, default=cutoff - CLOCK_MARGIN))


OPEN_INTENT_SWEEP = "open_intents"
"""The sweep's row in `intent_sweeps`."""

_RESUME_FROM = select(intent_sweeps.c.resume_from).where(intent_sweeps.c.sweep == OPEN_INTENT_SWEEP)
_resume_at = insert(intent_sweeps).values(
    sweep=OPEN_INTENT_SWEEP, resume_from=bindparam("resume_from")
)
_REMEMBER_RESUME_FROM = _resume_at.on_conflict_do_update(
    index_elements=[intent_sweeps.c.sweep],
    set_={"resume_from": _resume_at.excluded.resume_from, "updated_at": func.now()},
)


async def sweep_open_intents(
    uow_factory: UnitOfWorkFactory, charging: Charging, *, grace: timedelta
) -> SweepPass:
    """One pass of the open-intent sweep (`settle_open_intents`), from where the last pass left
    intents open, whichever process ran it: the point is kept in the database (`intent_sweeps`),
    so a restart does not page through every intent ever created (one list call per 100
    intents, each costing the emulator more as its store grows: 3,600 orders behind it kept
    it busy for seconds at start-up and the gateway answered 504 meanwhile, issue 14). Only a
    database that never saw a pass lists every intent, once."""
    async with uow_factory().autocommit() as uow:
        since = (await uow.session.execute(_RESUME_FROM)).scalar_one_or_none()
    swept = await settle_open_intents(uow_factory, charging, grace=grace, since=since)
    async with uow_factory().autocommit() as uow:
        await uow.session.execute(_REMEMBER_RESUME_FROM, {"resume_from": swept.resume_from})
    return swept


async def _settle_open_intent(
    uow: UnitOfWork, listed: OpenIntent, charging: Charging
) -> OpenIntentStep | None:
    """Settle or cancel one listed intent under its order's row lock; None: not ours to touch
    (another system's on the same account); LEAVE: its order is being settled right now, or
    the provider has not decided (the next pass looks again)."""
    try:
        order_id = uuid.UUID(listed.order_id)
    except ValueError:
        return None
    ours = select(order_payments.c.payment_id).where(order_payments.c.order_id == order_id)
    payment_id = (await uow.session.execute(ours)).scalar_one_or_none()
    if payment_id is None or str(payment_id) != listed.payment_id:
        return None  # not an order of this service
    # SKIP LOCKED: a handler holding the row may be between creating this very intent and
    # committing its id; once the row is ours, whatever it committed is visible.
    locked = await uow.session.execute(ours.with_for_update(skip_locked=True))
    if locked.scalar_one_or_none() is None:
        return OpenIntentStep.LEAVE  # held
    payment = await load_order_payment(uow.session, order_id)
    # Where it stands now: the list was read before the lock.
    intent = await charging.gateway.retrieve_intent(listed.intent.id)
    step = open_intent_step(
        intent.state,
        is_attempt=intent.id == payment.attempt_payment_id,
        status=payment.facts.status,
    )
    if step in (OpenIntentStep.LEAVE, OpenIntentStep.HELD):
        return step  # HELD: the next passes need not look again, the review sweep ends it
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
    elif step is OpenIntentStep.RESOLVE:
        await resolve_action(uow, order_id, charging)
    else:
        await charging.gateway.cancel_intent(intent.id)
    return step
