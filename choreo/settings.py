"""The base settings every service builds on: the only code that reads the environment.

Each service subclasses `ServiceSettings` with its own env prefix (`ORDER_`, `PAYMENT_`, ...).
What the whole system shares (the broker, Stripe, SendGrid, Redis, a shared PostgreSQL server)
is read from unprefixed variables, so one `.env` can describe the stack.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from choreo.logs import LogFormat

Environment = Literal["dev", "test", "prod"]

DEV_ENVIRONMENTS: tuple[Environment, ...] = ("dev", "test")
"""Where the development defaults of secrets (`choreo.dev_defaults`) are accepted."""


class ServiceSettings(BaseSettings):
    """Settings shared by every service; subclasses set `service` and `database_name`."""

    # Errors never echo the input: a rejected value may be a secret.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    service: ClassVar[str]
    database_name: ClassVar[str | None] = None

    env: Environment = Field(default="dev", validation_alias=AliasChoices("CHOREO_ENV"))
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    # JSON lines, short text lines for a person, or auto (text on a terminal); `choreo up`
    # chooses for the services it starts (--log-format).
    log_format: LogFormat = Field(
        default=LogFormat.AUTO, validation_alias=AliasChoices("CHOREO_LOG_FORMAT")
    )
    # The service's own database; when unset, `shared_database_url` (a server URL) is used
    # with this service's database name.
    database_url: str | None = None
    shared_database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL")
    )
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS")
    )
    # Kafka's fetch.max.wait.ms; why it matters on Tansu: choreo.kafka.FETCH_MAX_WAIT_MS.
    kafka_fetch_max_wait_ms: int = Field(
        default=500, gt=0, validation_alias=AliasChoices("KAFKA_FETCH_MAX_WAIT_MS")
    )
    # TLS and SASL to the broker; choreo.kafka.KafkaSecurity checks the combination at start-up.
    kafka_security_protocol: str = Field(
        default="PLAINTEXT", validation_alias=AliasChoices("KAFKA_SECURITY_PROTOCOL")
    )
    kafka_sasl_mechanism: str | None = Field(
        default=None, validation_alias=AliasChoices("KAFKA_SASL_MECHANISM")
    )
    kafka_sasl_username: str | None = Field(
        default=None, validation_alias=AliasChoices("KAFKA_SASL_USERNAME")
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("KAFKA_SASL_PASSWORD")
    )
    kafka_ssl_cafile: str | None = Field(
        default=None, validation_alias=AliasChoices("KAFKA_SSL_CAFILE")
    )
    kafka_ssl_certfile: str | None = Field(
        default=None, validation_alias=AliasChoices("KAFKA_SSL_CERTFILE")
    )
    kafka_ssl_keyfile: str | None = Field(
        default=None, validation_alias=AliasChoices("KAFKA_SSL_KEYFILE")
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True, validation_alias=AliasChoices("KAFKA_SSL_CHECK_HOSTNAME")
    )
    topic_prefix: str = Field(default="", validation_alias=AliasChoices("CHOREO_TOPIC_PREFIX"))
    jwks_url: str | None = Field(default=None, validation_alias=AliasChoices("JWT_JWKS_URL"))
    jwks_json: str | None = Field(default=None, validation_alias=AliasChoices("JWT_JWKS"))
    # The bearer token of the operational endpoints (`/metrics`, and outside dev the internal
    # services' `/openapi.json`); one for the whole system, required in prod (choreo.service).
    ops_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CHOREO_OPS_TOKEN")
    )
    # Signed events (choreo.signing): this service's private key (Ed25519, PKCS#8 PEM; read
    # with the service's prefix, ORDER_EVENT_SIGNING_KEY say) and the public keys of every
    # publishing service (one JSON document for the whole system). Both required in prod.
    event_signing_key: SecretStr | None = None
    event_keys: str | None = Field(default=None, validation_alias=AliasChoices("CHOREO_EVENT_KEYS"))
    relay_batch_size: int = 500
    # A relay wakes on NOTIFY (psycopg keeps those that arrive between waits); the poll is a
    # fallback only, and a wake-up a second cost each idle service ~1 ms of CPU a second.
    relay_poll_interval_seconds: float = 5.0
    # How far back a relay publishes again when the broker lost its log (choreo.outbox.Relay).
    relay_republish_window_seconds: float = 900.0
    consumer_max_attempts: int = 5
    consumer_retry_initial_seconds: float = 0.2
    consumer_retry_max_seconds: float = 5.0

    @model_validator(mode="after")
    def _require_a_database(self) -> ServiceSettings:
        if self.database_name is not None and self.database_dsn is None:
            prefix = self.model_config.get("env_prefix", "")
            raise ValueError(
                f"no database configured: set {prefix}DATABASE_URL, or DATABASE_URL to a "
                "PostgreSQL server URL"
            )
        return self

    @property
    def database_dsn(self) -> str | None:
        """The SQLAlchemy URL of this service's own database (psycopg 3 driver)."""
        if self.database_url:
            url = make_url(self.database_url)
        elif self.shared_database_url and self.database_name:
            url = make_url(self.shared_database_url).set(database=self.database_name)
        else:
            return None
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)

    def refuse_dev_default(
        self,
        variable: str,
        value: SecretStr | None,
        dev_default: str,
        *,
        what: str,
        instead: str,
        accepted_in: tuple[Environment, ...] = DEV_ENVIRONMENTS,
    ) -> None:
        """Raise ValueError, outside `accepted_in`, when the secret read from `variable` is its
        development default, or unset or empty (the service would fall back to the default).
        `what` names the secret ("key"), `instead` says what to set it to. The error names the
        variable, never its value."""
        if self.env in accepted_in:
            return
        secret = value.get_secret_value() if value is not None else ""
        if secret and secret != dev_default:
            return
        state = f"{variable} is not set, and" if not secret else f"{variable}:"
        accepted = " or ".join(accepted_in)
        raise ValueError(
            f"{state} the dev default {what} is refused outside CHOREO_ENV={accepted}; {instead}"
        )

    def topic(self, name: str) -> str:
        """The physical name of a logical topic (a prefix isolates test runs)."""
        return f"{self.topic_prefix}{name}"
