"""The user service's settings: the only module of the service that reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from choreo import dev_defaults
from choreo.settings import ServiceSettings
from user_service.domain import (
    MIN_ADMIN_PASSWORD_LENGTH,
    InvalidInputError,
    admin_password_problem,
    normalise_email,
)


class Settings(ServiceSettings):
    # The settings hold secrets: a refused value must not be repeated in the error.
    model_config = SettingsConfigDict(env_prefix="USER_", hide_input_in_errors=True)

    service: ClassVar[str] = "user"
    database_name: ClassVar[str | None] = "users"

    port: int = 8001

    access_token_ttl_seconds: int = Field(default=900, ge=1, le=24 * 3600)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=1, le=365 * 24 * 3600)
    # How often expired refresh tokens are deleted (a revoked one is kept until it expires, so
    # that its reuse is still recognised).
    refresh_token_purge_interval_seconds: float = Field(default=3600.0, gt=0)
    # How long an e-mailed password-reset token works (it works once).
    password_reset_token_ttl_seconds: int = Field(default=30 * 60, ge=60, le=24 * 3600)
    # The notification service's public key (X25519, raw, base64url): each reset token is
    # sealed to it (choreo.sealing) before it leaves. Shared, so unprefixed; required in prod.
    notification_key: str | None = Field(
        default=None, validation_alias=AliasChoices("CHOREO_NOTIFICATION_KEY")
    )

    # Credential attempts per account (the e-mail address: login, registration) and per client
    # address (sign-ins, login and refresh; registrations, apart), each refilled at that many
    # per window. A login or refresh that succeeds gives its attempt back, so these count
    # failures: 5 a minute lets an owner mistype a few times and a guesser try a few thousand
    # passwords a day, none among the 30,000 most common (the policy refuses them); 10 lets an
    # address shared by many fail twice as often, and turns a flood from one address into 429s
    # after its tenth try. Registrations are all counted: 10 a minute an address.
    credential_attempts_per_account: int = Field(default=5, ge=1)
    credential_attempts_per_address: int = Field(default=10, ge=1)
    credential_attempts_window_seconds: float = Field(default=60.0, gt=0)
    # Argon2id hashes at once (0: one per CPU) and how many more may wait for a turn; past
    # that, a sign-in is answered 503 at once. 16 waiting is about 3 s of work on 2 CPUs, and
    # holds an address's whole sign-in allowance: a flood from one address delays other
    # sign-ins (until its allowance is spent) but does not get them refused.
    password_hashing_concurrency: int = Field(default=0, ge=0)
    password_hashing_queue: int = Field(default=16, ge=0)

    # The token signing key: a PEM (Ed25519, PKCS#8) and its key id, or else a key file (read;
    # generated when missing in dev and test, with the key id derived from the public key).
    jwt_private_key: SecretStr | None = None
    jwt_key_id: str | None = None
    jwt_key_file: Path | None = None

    # The admin account seeded at start-up; unprefixed because `choreo up` prints them.
    admin_email: str | None = Field(
        default=None, validation_alias=AliasChoices("CHOREO_ADMIN_EMAIL")
    )
    admin_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CHOREO_ADMIN_PASSWORD")
    )

    @field_validator("jwt_private_key", "jwt_key_id", "jwt_key_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("admin_email")
    @classmethod
    def _admin_email_is_an_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalise_email(value)
        except InvalidInputError as error:
            raise ValueError(f"CHOREO_ADMIN_EMAIL is refused: {error}") from None

    @model_validator(mode="after")
    def _secrets_are_safe(self) -> Self:
        if self.env == "prod" and self.jwt_private_key is None and self.jwt_key_file is None:
            raise ValueError(
                "no token signing key: set USER_JWT_PRIVATE_KEY (an Ed25519 private key, PEM, "
                "PKCS#8) and USER_JWT_KEY_ID, or USER_JWT_KEY_FILE to a file holding the key"
            )
        if (self.admin_email is None) != (self.admin_password is None):
            raise ValueError("set both CHOREO_ADMIN_EMAIL and CHOREO_ADMIN_PASSWORD, or neither")
        if self.admin_password is not None:
            # `choreo up` prints the default, so it is refused in test too.
            self.refuse_dev_default(
                "CHOREO_ADMIN_PASSWORD",
                self.admin_password,
                dev_defaults.ADMIN_PASSWORD,
                what="password",
                instead=f"choose one of at least {MIN_ADMIN_PASSWORD_LENGTH} characters",
                accepted_in=("dev",),
            )
            problem = admin_password_problem(
                self.admin_password.get_secret_value(),
                email=self.admin_email,
                dev_default=dev_defaults.ADMIN_PASSWORD,
                dev=self.env == "dev",
            )
            if problem is not None:
                raise ValueError(f"CHOREO_ADMIN_PASSWORD is refused: {problem}")
        return self
