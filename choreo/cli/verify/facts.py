"""Everything `choreo verify` read, in one place for the checks to judge: the services' rows,
Stripe's intents, the e-mails, and which sources could not be read (and why).

The sources are read one after the other while the system may be running, so an order whose
last change is recent may have effects still on their way (an event in an outbox, a record a
consumer is applying). Such an order is judged only once it is *settled*: it last changed before
a moment when every outbox was drained and no consumer group lagged (then every effect of it had
landed before the rows were read), or longer ago than the grace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from choreo.cli.verify.databases import (
    NotificationFacts,
    Order,
    Outbox,
    Payment,
    ProductStock,
    Reservation,
)
from choreo.cli.verify.providers import Email, Intent
from choreo.cli.verify.report import CheckResult

TERMINAL = frozenset({"CONFIRMED", "PROCESSING", "COMPLETED", "CANCELLED"})
"""Statuses in which the saga is over (fulfilment statuses come after CONFIRMED)."""
CONFIRMED = frozenset({"CONFIRMED", "PROCESSING", "COMPLETED"})
"""An order confirmed and not cancelled since."""


def database(service: str) -> str:
    """The source name of a service's database."""
    return f"{service} database"


ORDER_DB, INVENTORY_DB = database("order"), database("inventory")
PAYMENT_DB, NOTIFICATION_DB = database("payment"), database("notification")
BROKER, STRIPE, SINK = "broker", "Stripe", "e-mail sink"


@dataclass
class Facts:
    now: datetime
    """The order database's clock when the audit started."""
    since: datetime | None
    grace: timedelta
    quiet_since: datetime | None = None
    """When every outbox was drained and no group lagged (None: the system was busy)."""
    outboxes: dict[str, Outbox] = field(default_factory=dict)
    orders: dict[str, Order] | None = None
    known_elsewhere: set[str] = field(default_factory=set)
    """Order ids outside the audited orders (placed before --since) the order service knows."""
    reservations: dict[str, Reservation] | None = None
    products: list[ProductStock] | None = None
    payments: dict[str, Payment] | None = None
    notifications: NotificationFacts | None = None
    intents: list[Intent] | None = None
    emails: list[Email] | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    """Source -> why it could not be read: the checks that need it could not verify."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Optional source (Stripe, the e-mail sink) -> why it was not read."""

    def settled(self, moment: datetime) -> bool:
        """Whether the effects of a change at `moment` must have landed by now."""
        if self.quiet_since is not None and moment <= self.quiet_since:
            return True
        return moment < self.now - self.grace

    def knows_order(self, order_id: str) -> bool:
        return order_id in (self.orders or {}) or order_id in self.known_elsewhere

    def in_scope(self, moment: datetime) -> bool:
        return self.since is None or moment >= self.since

    def require(self, result: CheckResult, *sources: str) -> bool:
        """False, with the check marked as not verified, when a source it needs is missing."""
        missing = [f"{s}: {self.unavailable[s]}" for s in sources if s in self.unavailable]
        if missing:
            result.error = "; ".join(missing)
        return not missing


def seconds(delta: timedelta) -> str:
    """A duration for people: `42 s`, `3 min 5 s`, `2 h 10 min`."""
    exact = max(delta.total_seconds(), 0.0)
    total = int(exact)
    if total < 10 and exact != total:
        return f"{exact:.1f} s"
    if total < 120:
        return f"{total} s"
    minutes, second = divmod(total, 60)
    if minutes < 120:
        return f"{minutes} min {second} s"
    hours, minute = divmod(minutes, 60)
    return f"{hours} h {minute} min"
