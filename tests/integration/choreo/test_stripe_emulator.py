"""The Stripe emulator of the embedded stack keeps its state across a SIGKILL: what changed a
second or more before the kill is there after the restart, references between objects too."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import stripe

from choreo.stack.stripe import TEST_SECRET_KEY, LocalStripe
from choreo.stack.stripe_state import MIN_SAVE_INTERVAL
from choreo.testing import free_port


def client(emulator: LocalStripe) -> stripe.StripeClient:
    return stripe.StripeClient(TEST_SECRET_KEY, base_addresses={"api": emulator.api_base})


def test_a_capture_made_before_a_sigkill_is_there_after_the_restart(tmp_path: Path) -> None:
    emulator = LocalStripe(free_port(), tmp_path / "stripe.pickle")
    emulator.start()
    try:
        api = client(emulator)
        customer = api.v1.customers.create(params={"email": "ada@example.com"})
        method = api.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {
                    "number": "4242424242424242",
                    "exp_month": 12,
                    "exp_year": 2034,
                    "cvc": "739",
                },
            }
        )
        api.v1.payment_methods.attach(method.id, params={"customer": customer.id})
        intent = api.v1.payment_intents.create(
            params={
                "amount": 2500,
                "currency": "usd",
                "customer": customer.id,
                "payment_method": method.id,
                "capture_method": "manual",
                "confirm": True,
            }
        )
        assert intent.status == "requires_capture"
        # Captured through the intent: localstripe changes the charge it references.
        api.v1.payment_intents.capture(intent.id)
        time.sleep(MIN_SAVE_INTERVAL * 2.5)
        pid = emulator.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        emulator.stop()

        emulator.start()
        api = client(emulator)
        again = api.v1.payment_intents.retrieve(intent.id, params={"expand": ["latest_charge"]})
        assert again.status == "succeeded"
        charge = again.latest_charge
        assert isinstance(charge, stripe.Charge)
        assert charge.captured is True
        assert api.v1.charges.retrieve(charge.id).captured is True
        assert api.v1.customers.retrieve(customer.id).email == "ada@example.com"
    finally:
        emulator.stop()
