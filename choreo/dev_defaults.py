"""The development defaults of the secrets in the settings: what `choreo up` hands its emulators
and services, and what a service refuses outside dev (`ServiceSettings.refuse_dev_default`).

It imports nothing, so that settings read them without loading the development stack.
"""

from __future__ import annotations

STRIPE_API_KEY = "sk_test_choreo"
"""The Stripe emulator's key (localstripe accepts any `sk_test_` key)."""

STRIPE_WEBHOOK_SECRET = "whsec_choreo_dev"
"""The secret `choreo up` registers its Stripe emulator's webhook endpoint with, and the payment
service verifies `Stripe-Signature` against."""

SENDGRID_API_KEY = "SG.choreo-dev"
"""The SendGrid sink's key (the sink accepts any bearer token)."""

TWILIO_ACCOUNT_SID = "AC0000000000000000000000000000c0de"
"""The Twilio sink's account (the sink accepts any account and token)."""
TWILIO_AUTH_TOKEN = "choreo-dev-twilio-token"
"""The Twilio sink's auth token."""

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "choreo-admin"
"""The admin account `choreo up` seeds in dev and prints (CHOREO_ADMIN_EMAIL/_PASSWORD)."""
