"""What one `choreo bench` run does: the load, its mix, the phases and where figures go."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from choreo.stack.config import StackPorts

RAISED_LIMITS = {
    # Every order comes from one address, and from a few customers: the gateway's buckets per
    # address and per user (20/s each by default) would otherwise be what is measured.
    "GATEWAY_ADDRESS_RATE_LIMIT_PER_SECOND": "100000",
    "GATEWAY_ADDRESS_RATE_LIMIT_BURST": "100000",
    "GATEWAY_RATE_LIMIT_PER_SECOND": "100000",
    "GATEWAY_RATE_LIMIT_BURST": "100000",
    # Each customer is registered and signed in from that one address too.
    "USER_CREDENTIAL_ATTEMPTS_PER_ADDRESS": "100000",
    "USER_CREDENTIAL_ATTEMPTS_PER_ACCOUNT": "1000",
    # ... and the payment service's risk screening would hold or decline a customer's 6th
    # order in 10 minutes, the address's 21st in an hour, a declined-card customer's 4th: the
    # screening still runs on every charge (its cost is measured), its limits are out of reach,
    # and its windows are a second long, so that the bench's few customers, who share one card
    # number and one address, look to it like a shop's many: each count reads the attempts of
    # the last second, not every order of the run (a real hot card or address is read only up
    # to its limit, whatever its history: docs/architecture.md, "Risk screening").
    "PAYMENT_RISK_CARD_WINDOW_SECONDS": "1",
    "PAYMENT_RISK_ADDRESS_WINDOW_SECONDS": "1",
    "PAYMENT_RISK_CARD_TESTING_WINDOW_SECONDS": "1",
    "PAYMENT_RISK_CARD_REVIEW_ATTEMPT": "100000000",
    "PAYMENT_RISK_CARD_DECLINE_ATTEMPT": "100000000",
    "PAYMENT_RISK_ADDRESS_DECLINE_ATTEMPT": "100000000",
    "PAYMENT_RISK_CARD_TESTING_DECLINES": "100000000",
    "PAYMENT_RISK_NEW_ACCOUNT_REVIEW_AMOUNT": "100000000000",
}
"""The limits `choreo bench` raises on the stack it starts (unless the environment sets them)."""

EXTERNAL_LIMITS_NOTE = (
    "limits that may bind on a stack the bench did not start: the gateway's token buckets per "
    "address and per user (GATEWAY_ADDRESS_RATE_LIMIT_PER_SECOND/_BURST, "
    "GATEWAY_RATE_LIMIT_PER_SECOND/_BURST: 20/s, burst 40 by default; a refused order is a "
    "failed saga, HTTP 429) and the user service's sign-in attempts per address "
    "(USER_CREDENTIAL_ATTEMPTS_PER_ADDRESS, 10 a minute: registering the customers waits for "
    "it), and the payment service's risk screening, which holds or declines a card's 6th "
    "order in 10 minutes and an address's 21st in an hour (PAYMENT_RISK_*: an order held for "
    "review is a lost saga); `choreo bench` raises all of them on a stack it starts"
)


@dataclass(frozen=True)
class Plan:
    rate: float | None = 10.0
    """Orders per second, sent open-loop (None: closed-loop at `concurrency`)."""
    concurrency: int | None = None
    """Sagas in flight, closed-loop: each worker places an order and waits for its outcome."""
    duration: float = 60.0
    warmup: float = 10.0
    declined_share: float = 0.0
    out_of_stock_share: float = 0.0
    customers: int = 20
    products: int = 10
    outcome_timeout: float = 120.0
    """A saga with no outcome this long after it was due is lost."""
    idle_seconds: float = 10.0
    ceiling_seconds: float = 5.0
    ceiling_clients: int = 8
    baseline_seconds: float = 15.0
    baseline_concurrency: int = 16
    seed: int = 0
    gateway: str | None = None
    """The gateway of a running stack; None: start one."""
    data_dir: Path | None = None
    durable_broker: bool = False
    partitions: int = 6
    """Partitions of each topic the stack the bench starts creates."""
    ports: StackPorts | None = None
    """Where the parts are (a running stack) or go (one the bench starts); None: free ports for
    a stack the bench starts, `choreo up`'s defaults for a running one."""
    topic_prefix: str = ""
    admin: tuple[str, str] | None = None
    environment: Mapping[str, str] = field(default_factory=dict)

    @property
    def closed_loop(self) -> bool:
        return self.concurrency is not None

    def describe_load(self) -> str:
        if self.concurrency is not None:
            load = f"closed-loop, {self.concurrency} sagas in flight"
        else:
            load = f"open-loop, {self.rate:g} orders/s"
        mix = []
        if self.declined_share:
            mix.append(f"{self.declined_share:.0%} declined cards")
        if self.out_of_stock_share:
            mix.append(f"{self.out_of_stock_share:.0%} out of stock")
        shares = f" ({', '.join(mix)})" if mix else ""
        return f"{load}{shares}, {self.warmup:g} s warm-up + {self.duration:g} s measured"
