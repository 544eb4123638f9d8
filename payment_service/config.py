"""The payment service's settings: the only module of the service that reads the environment."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from choreo import dev_defaults
from choreo.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENT_")

    service: ClassVar[str] = "payment"
    database_name: ClassVar[str | None] = "payments"

    port: int = 8003

    # Shared with the rest of the stack, so unprefixed: the embedded stack points them at
    # localstripe, production at api.stripe.com with a live key.
    stripe_api_base: str = Field(
        default="https://api.stripe.com", validation_alias=AliasChoices("STRIPE_API_BASE")
    )
    stripe_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("STRIPE_API_KEY")
    )
    # A Stripe call is made while the order's row is locked: bound how long it may hang.
    stripe_timeout_seconds: float = Field(default=10.0, gt=0)
    # No charge is started later than this before the order's deadline (OrderCreated's
    # `deadline`, ORDER_SAGA_TIMEOUT_SECONDS after it was placed): the order is EXPIRED instead,
    # and the order service cancels it (TIMEOUT). A charge started closer to the deadline could
    # land after the order was cancelled, and then be refunded: the customer would be charged,
    # told "cancelled", then "refunded", and the provider's fees paid for nothing. The default
    # covers a confirm as slow as one Stripe call may be (PAYMENT_STRIPE_TIMEOUT_SECONDS) plus
    # the PaymentSucceeded's way to the order service; keep it well below
    # ORDER_SAGA_TIMEOUT_SECONDS, or no order is ever charged.
    charge_margin_seconds: float = Field(default=10.0, ge=0)
    # The open-intent sweep (docs/saga.md): this often, the intents Stripe holds open for this
    # service's orders are settled or cancelled (the first pass runs at start-up). An intent is
    # looked at only once it is this old: a younger one may be on its way to phase one of its
    # charge, in a handler that holds its order's row (the sweep skips rows held, too).
    intent_sweep_interval_seconds: float = Field(default=60.0, gt=0)
    intent_sweep_grace_seconds: float = Field(default=60.0, ge=0)

    # Fault injection for the never-charge-twice tests; refused in production.
    fault_kill_after_create: bool = False
    fault_kill_after_confirm: bool = False
    fault_delay_after_confirm_seconds: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _production_is_safe(self) -> Self:
        self.refuse_dev_default(
            "STRIPE_API_KEY",
            self.stripe_api_key,
            dev_defaults.STRIPE_API_KEY,
            what="key (the Stripe emulator's)",
            instead="set it to the Stripe account's secret key",
        )
        if self.env == "prod" and (
            self.fault_kill_after_create
            or self.fault_kill_after_confirm
            or self.fault_delay_after_confirm_seconds
        ):
            raise ValueError(
                "PAYMENT_FAULT_KILL_AFTER_CREATE, PAYMENT_FAULT_KILL_AFTER_CONFIRM and "
                "PAYMENT_FAULT_DELAY_AFTER_CONFIRM_SECONDS are test-only fault injection and "
                "are refused when CHOREO_ENV=prod"
            )
        return self

    @property
    def stripe_secret_key(self) -> str:
        """The key to call Stripe with; outside prod, the emulator's test key by default."""
        if self.stripe_api_key is not None:
            return self.stripe_api_key.get_secret_value()
        return dev_defaults.STRIPE_API_KEY
