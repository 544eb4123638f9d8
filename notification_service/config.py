"""The notification service's settings: the only module of it that reads the environment."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from choreo import dev_defaults
from choreo.settings import DEV_ENVIRONMENTS, ServiceSettings

DEV_PASSWORD_RESET_URL = "http://127.0.0.1:8000/reset-password?token="


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATION_")

    service: ClassVar[str] = "notification"
    database_name: ClassVar[str | None] = "notifications"

    port: int = 8005

    # Shared with the rest of the stack, so unprefixed: the embedded stack points them at its
    # SendGrid sink, production at api.sendgrid.com with a real key.
    sendgrid_host: str = Field(
        default="https://api.sendgrid.com", validation_alias=AliasChoices("SENDGRID_HOST")
    )
    sendgrid_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SENDGRID_API_KEY")
    )
    from_email: str = Field(default="orders@choreo.local", pattern=r"^[^@\s]+@[^@\s]+$")
    # SMS through Twilio's Messages API, shared like SendGrid's: the embedded stack points
    # TWILIO_API_BASE at its Twilio sink, production at api.twilio.com with a real account.
    twilio_api_base: str = Field(
        default="https://api.twilio.com", validation_alias=AliasChoices("TWILIO_API_BASE")
    )
    twilio_account_sid: str = Field(
        default=dev_defaults.TWILIO_ACCOUNT_SID,
        pattern=r"^AC[0-9a-fA-F]{32}$",
        validation_alias=AliasChoices("TWILIO_ACCOUNT_SID"),
    )
    twilio_auth_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("TWILIO_AUTH_TOKEN")
    )
    # The number (E.164) or messaging sender the SMS come from.
    sms_from: str = Field(default="+15005550006", min_length=2, max_length=64)
    # Where a password-reset e-mail sends its reader: the reset token is appended to it. The
    # default is the dev gateway's; `choreo up` sets its own gateway's, prod must set an https one.
    password_reset_url: str = DEV_PASSWORD_RESET_URL
    # The private key (X25519, PKCS#8 PEM) that opens the reset tokens the user service seals
    # (choreo.sealing), and the public key that service seals to (shared, unprefixed), checked
    # to be this key's. The private key is required in prod.
    sealing_key: SecretStr | None = None
    notification_key: str | None = Field(
        default=None, validation_alias=AliasChoices("CHOREO_NOTIFICATION_KEY")
    )
    # A send that gets no answer in this time has an unknown outcome and is not sent again.
    send_timeout_seconds: float = Field(default=10.0, gt=0)

    # A notification can arrive before the contact or order it is about (topics are consumed
    # concurrently): the retries are what waits for them, so this service gets more of them
    # than the kit's default 5 (~3 s). 8 attempts wait ~16 s in all (backoff doubling from
    # 0.2 s, capped at 5 s). A record that waits holds back only its own partition (each has a
    # worker of its own), but every later record of that partition waits with it.
    consumer_max_attempts: int = Field(default=8, ge=1)

    @model_validator(mode="after")
    def _production_is_safe(self) -> Self:
        self.refuse_dev_default(
            "SENDGRID_API_KEY",
            self.sendgrid_api_key,
            dev_defaults.SENDGRID_API_KEY,
            what="key (the SendGrid sink's)",
            instead="set it to the SendGrid account's API key",
        )
        if self.sms_enabled and self.env not in DEV_ENVIRONMENTS:
            # SMS is optional outside dev (no token: none is sent); set, it must be real.
            self.refuse_dev_default(
                "TWILIO_AUTH_TOKEN",
                self.twilio_auth_token,
                dev_defaults.TWILIO_AUTH_TOKEN,
                what="token (the Twilio sink's)",
                instead="set it to the Twilio account's auth token, or unset it to send no SMS",
            )
            if self.twilio_account_sid == dev_defaults.TWILIO_ACCOUNT_SID:
                raise ValueError(
                    "TWILIO_ACCOUNT_SID is the dev default (the Twilio sink's), refused outside "
                    "CHOREO_ENV=dev or test; set it to the Twilio account's SID"
                )
        if self.env == "prod" and not self.password_reset_url.startswith("https://"):
            # A reset link carries a live token: never over plain http, never the dev default.
            raise ValueError("NOTIFICATION_PASSWORD_RESET_URL must be an https:// URL in prod")
        return self

    @property
    def sendgrid_key(self) -> str:
        """The key to call SendGrid with; outside prod, the stack's sink key by default."""
        if self.sendgrid_api_key is not None:
            return self.sendgrid_api_key.get_secret_value()
        return dev_defaults.SENDGRID_API_KEY

    @property
    def sms_enabled(self) -> bool:
        """Whether SMS is sent: always in dev and test (the Twilio sink), elsewhere only with a
        TWILIO_AUTH_TOKEN; without one an SMS chosen is skipped (and said so) for an e-mail."""
        return self.env in DEV_ENVIRONMENTS or bool(
            self.twilio_auth_token and self.twilio_auth_token.get_secret_value()
        )

    @property
    def twilio_token(self) -> str:
        """The token to call Twilio with; outside prod, the stack's sink token by default."""
        if self.twilio_auth_token is not None:
            return self.twilio_auth_token.get_secret_value()
        return dev_defaults.TWILIO_AUTH_TOKEN
