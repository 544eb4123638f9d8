"""The payment service's settings: the only module of the service that reads the environment."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from choreo import dev_defaults
from choreo.settings import DEV_ENVIRONMENTS, ServiceSettings
from payment_service.risk import RiskPolicy, RiskPolicyError


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
    # The webhook endpoint's signing secret (Stripe's `whsec_...`), shared with the stack, which
    # registers its emulator's endpoint with it. Unset outside dev: the endpoint answers 503.
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("STRIPE_WEBHOOK_SECRET")
    )
    # How far a webhook's signed timestamp may be from this host's clock (Stripe's default).
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1)
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

    # The risk screening before each charge (payment_service/risk.py, docs/architecture.md):
    # windows in seconds, attempt counts that include the attempt itself, amounts in minor
    # units. A policy that cannot hold anything for review (review score above the decline
    # score, say) is refused at start-up.
    risk_card_window_seconds: float = Field(default=600.0, gt=0)
    risk_card_review_attempt: int = Field(default=6, ge=1)
    risk_card_decline_attempt: int = Field(default=11, ge=1)
    risk_address_window_seconds: float = Field(default=3600.0, gt=0)
    risk_address_decline_attempt: int = Field(default=21, ge=1)
    risk_card_testing_window_seconds: float = Field(default=3600.0, gt=0)
    risk_card_testing_declines: int = Field(default=3, ge=1)
    risk_anomaly_min_paid_orders: int = Field(default=3, ge=0)
    risk_anomaly_factor: int = Field(default=3, ge=1)
    risk_anomaly_points: int = Field(default=30, ge=0)
    risk_anomaly_history: int = Field(default=100, ge=1)
    risk_new_account_seconds: float = Field(default=86400.0, ge=0)
    risk_new_account_review_amount: int = Field(default=50_000, ge=0)
    risk_review_score: int = Field(default=65, ge=0)
    risk_decline_score: int = Field(default=75, ge=0)
    # A check slower than this (its tables locked, the database slow) holds the order for
    # review instead of deciding blind.
    risk_timeout_seconds: float = Field(default=2.0, gt=0)
    # A review no admin decided in this long is rejected (the card's hold released); the
    # review sweep looks this often.
    risk_review_expiry_seconds: float = Field(default=7 * 86400.0, gt=0)
    risk_review_sweep_interval_seconds: float = Field(default=60.0, gt=0)

    # Fault injection for the never-charge-twice tests; refused in production.
    fault_kill_after_create: bool = False
    fault_kill_after_confirm: bool = False
    fault_delay_after_confirm_seconds: float = Field(default=0.0, ge=0)

    @property
    def risk_policy(self) -> RiskPolicy:
        """The screening's policy. Raises RiskPolicyError for one that cannot be applied."""
        return RiskPolicy(
            card_window=timedelta(seconds=self.risk_card_window_seconds),
            card_review_attempt=self.risk_card_review_attempt,
            card_decline_attempt=self.risk_card_decline_attempt,
            address_window=timedelta(seconds=self.risk_address_window_seconds),
            address_decline_attempt=self.risk_address_decline_attempt,
            card_testing_window=timedelta(seconds=self.risk_card_testing_window_seconds),
            card_testing_declines=self.risk_card_testing_declines,
            anomaly_min_paid_orders=self.risk_anomaly_min_paid_orders,
            anomaly_factor=self.risk_anomaly_factor,
            anomaly_points=self.risk_anomaly_points,
            anomaly_history=self.risk_anomaly_history,
            new_account_age=timedelta(seconds=self.risk_new_account_seconds),
            new_account_review_amount=self.risk_new_account_review_amount,
            review_score=self.risk_review_score,
            decline_score=self.risk_decline_score,
        )

    @model_validator(mode="after")
    def _risk_policy_applies(self) -> Self:
        try:
            self.risk_policy  # noqa: B018  # built to be checked
        except RiskPolicyError as error:
            raise ValueError(f"PAYMENT_RISK_*: {error}") from None
        return self

    @model_validator(mode="after")
    def _production_is_safe(self) -> Self:
        self.refuse_dev_default(
            "STRIPE_API_KEY",
            self.stripe_api_key,
            dev_defaults.STRIPE_API_KEY,
            what="key (the Stripe emulator's)",
            instead="set it to the Stripe account's secret key",
        )
        if self.stripe_webhook_secret is not None:
            self.refuse_dev_default(
                "STRIPE_WEBHOOK_SECRET",
                self.stripe_webhook_secret,
                dev_defaults.STRIPE_WEBHOOK_SECRET,
                what="webhook secret (the emulator's)",
                instead="set it to the secret of the account's webhook endpoint (whsec_...)",
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
    def webhook_secret(self) -> str | None:
        """The secret webhooks are verified with; outside prod, the emulator's by default."""
        if self.stripe_webhook_secret is not None:
            return self.stripe_webhook_secret.get_secret_value()
        return dev_defaults.STRIPE_WEBHOOK_SECRET if self.env in DEV_ENVIRONMENTS else None

    @property
    def stripe_secret_key(self) -> str:
        """The key to call Stripe with; outside prod, the emulator's test key by default."""
        if self.stripe_api_key is not None:
            return self.stripe_api_key.get_secret_value()
        return dev_defaults.STRIPE_API_KEY
