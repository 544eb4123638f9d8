"""What `choreo up` runs and where: the services, the topics, the ports, and which parts the
environment provides instead of the embedded ones."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from choreo import dev_defaults
from choreo.events import SYSTEM_TOPICS
from choreo.kafka import FAST_FETCH_MAX_WAIT_MS
from choreo.sealing import key_in
from choreo.signing import keys_in
from choreo.stack.errors import StackError
from choreo.stack.postgres import database_url, socket_url


@dataclass(frozen=True)
class Service:
    name: str
    """Its part name, in logs and in `--port NAME=PORT`."""
    module: str
    """Run as `python -m <module>`."""
    env_prefix: str
    """Its settings' prefix: `<PREFIX>_PORT`, `<PREFIX>_DATABASE_URL`, `<PREFIX>_SERVICE_URL`."""
    database: str | None
    """Its own PostgreSQL database, if it keeps state."""


SERVICES = (
    Service("gateway", "gateway_service.main", "GATEWAY", None),
    Service("user", "user_service.main", "USER", "users"),
    Service("order", "order_service.main", "ORDER", "orders"),
    Service("payment", "payment_service.main", "PAYMENT", "payments"),
    Service("inventory", "inventory_service.main", "INVENTORY", "inventory"),
    Service("notification", "notification_service.main", "NOTIFICATION", "notifications"),
)

TOPICS = SYSTEM_TOPICS

DEFAULT_ADMIN_EMAIL = dev_defaults.ADMIN_EMAIL
DEFAULT_ADMIN_PASSWORD = dev_defaults.ADMIN_PASSWORD


@dataclass(frozen=True)
class StackPorts:
    """The loopback port of every part (`s3` serves only `--durable-broker`)."""

    gateway: int = 8000
    user: int = 8001
    order: int = 8002
    payment: int = 8003
    inventory: int = 8004
    notification: int = 8005
    postgres: int = 54320
    broker: int = 9092
    stripe: int = 8420
    sendgrid: int = 8025
    twilio: int = 8026
    s3: int = 9000

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(port.name for port in dataclasses.fields(cls))

    @classmethod
    def from_base(cls, base: int) -> StackPorts:
        """Consecutive ports from `base`, in the order of `names()`."""
        return cls(**{name: base + offset for offset, name in enumerate(cls.names())})

    def with_overrides(self, overrides: Mapping[str, int]) -> StackPorts:
        unknown = sorted(set(overrides) - set(self.names()))
        if unknown:
            raise StackError(
                f"unknown part {', '.join(unknown)}: the parts are {', '.join(self.names())}"
            )
        return dataclasses.replace(self, **overrides)

    def of(self, part: str) -> int:
        port: int = getattr(self, part)
        return port


EMBEDDED_PARTITIONS = 2
"""Partitions of each topic the embedded stack creates (`choreo up --partitions`).

Tansu answers a fetch by re-reading every partition asked for at halving intervals within the
fetch's wait, and the consumers' aiokafka clients encode and decode every partition of every
fetch in Python, so an idle or lightly loaded stack pays per partition for each poll. Two stacks
side by side (`choreo bench`, open-loop 2 orders/s each, 60 s; issue 14): 6 partitions 450.7 ms
of CPU per saga over the services, broker and PostgreSQL (the broker 199.0), 2 partitions 326.3
(108.5), POST -> outcome p50 255.8 against 215.1 ms; saturated (closed-loop 16 each, two pairs
with the sides swapped) 147.3 / 147.3 against 153.0 / 143.4 ms per saga and 5.95 / 5.70
against 5.20 / 5.92 sagas/s: no loss. Two still let a service apply two records of a topic at
once, and two replicas share the work. Apache Kafka answers a fetch when records arrive, so
deployments on it (docker-compose, Kubernetes) keep more partitions for more replicas."""


@dataclass(frozen=True)
class StackConfig:
    data_dir: Path = Path(".choreo")
    ports: StackPorts = field(default_factory=StackPorts)
    partitions: int = EMBEDDED_PARTITIONS
    durable_broker: bool = False
    environment: Mapping[str, str] = field(default_factory=dict)
    """The environment `choreo up` runs in: parts it names are not started, and the children
    inherit it."""
    services: Sequence[Service] = SERVICES
    python: str = sys.executable
    readiness_timeout: float = 60.0
    """Seconds a part has to become ready, at the start and after each restart."""
    restart: bool = True
    """Restart a part that exits, or that stops answering its probe for `unready_grace`."""
    unready_grace: float = 15.0


@dataclass(frozen=True)
class Endpoints:
    """Where every part is, and whether the stack runs it (embedded) or the environment gave it."""

    database_urls: Mapping[str, str]
    """Service name to database URL."""
    database_server: str | None
    """The server on which the stack creates the databases it derived URLs for."""
    databases_to_create: tuple[str, ...]
    embedded_postgres: bool
    kafka_bootstrap_servers: str
    embedded_broker: bool
    stripe_api_base: str
    embedded_stripe: bool
    sendgrid_host: str
    embedded_sendgrid: bool
    twilio_api_base: str
    embedded_twilio: bool


def resolve_endpoints(config: StackConfig) -> Endpoints:
    """Which parts the environment gives, and the addresses of all of them."""
    environment = config.environment
    ports = config.ports
    shared_server = environment.get("DATABASE_URL")
    embedded_server = f"postgresql://postgres@127.0.0.1:{ports.postgres}"
    database_urls: dict[str, str] = {}
    to_create: list[str] = []
    needs_embedded = False
    for service in config.services:
        if service.database is None:
            continue
        given = environment.get(f"{service.env_prefix}_DATABASE_URL")
        if given:
            database_urls[service.name] = given
            continue
        needs_embedded = needs_embedded or not shared_server
        database_urls[service.name] = (
            database_url(shared_server, service.database)
            if shared_server
            else socket_url(ports.postgres, service.database)
        )
        to_create.append(service.database)
    kafka = environment.get("KAFKA_BOOTSTRAP_SERVERS")
    stripe = environment.get("STRIPE_API_BASE")
    sendgrid = environment.get("SENDGRID_HOST")
    twilio = environment.get("TWILIO_API_BASE")
    return Endpoints(
        database_urls=database_urls,
        database_server=(shared_server or embedded_server) if to_create else None,
        databases_to_create=tuple(to_create),
        embedded_postgres=needs_embedded,
        kafka_bootstrap_servers=kafka or f"127.0.0.1:{ports.broker}",
        embedded_broker=not kafka,
        stripe_api_base=stripe or f"http://127.0.0.1:{ports.stripe}",
        embedded_stripe=not stripe,
        sendgrid_host=sendgrid or f"http://127.0.0.1:{ports.sendgrid}",
        embedded_sendgrid=not sendgrid,
        twilio_api_base=twilio or f"http://127.0.0.1:{ports.twilio}",
        embedded_twilio=not twilio,
    )


DEV_ADDRESS_ATTEMPTS = 1_000_000
"""PAYMENT_RISK_ADDRESS_DECLINE_ATTEMPT on a dev stack unless the environment sets it."""


def service_environment(config: StackConfig, endpoints: Endpoints) -> dict[str, str]:
    """The environment every service runs with: this one, plus where everything is."""
    environment = dict(config.environment)
    environment.setdefault("CHOREO_ENV", "dev")
    if environment["CHOREO_ENV"] == "dev":
        # Set here so that the stack can print them: a service refuses defaults outside dev.
        environment.setdefault("CHOREO_ADMIN_EMAIL", DEFAULT_ADMIN_EMAIL)
        environment.setdefault("CHOREO_ADMIN_PASSWORD", DEFAULT_ADMIN_PASSWORD)
        # Every request of a dev stack comes from 127.0.0.1: the risk screening's per-address
        # rule (the 21st order in an hour declined) would stop whoever tries it for an hour.
        # Its per-card rules stay as in production.
        environment.setdefault("PAYMENT_RISK_ADDRESS_DECLINE_ATTEMPT", str(DEV_ADDRESS_ATTEMPTS))
    if endpoints.embedded_stripe:
        environment.setdefault("STRIPE_API_KEY", dev_defaults.STRIPE_API_KEY)
    if endpoints.embedded_sendgrid:
        environment.setdefault("SENDGRID_API_KEY", dev_defaults.SENDGRID_API_KEY)
    if endpoints.embedded_twilio:
        environment.setdefault("TWILIO_ACCOUNT_SID", dev_defaults.TWILIO_ACCOUNT_SID)
        environment.setdefault("TWILIO_AUTH_TOKEN", dev_defaults.TWILIO_AUTH_TOKEN)
    # The user service signs tokens with a key generated once per data directory in dev.
    environment.setdefault(
        "USER_JWT_KEY_FILE", str(config.data_dir.resolve() / "jwt-signing-key.pem")
    )
    if "CHOREO_EVENT_KEYS" not in environment:
        # Each publishing service signs its events with a key kept in the data directory.
        signers, keys = keys_in(config.data_dir.resolve() / "event-keys")
        environment["CHOREO_EVENT_KEYS"] = keys.to_json()
        for name, signer in signers.items():
            environment.setdefault(f"{name.upper()}_EVENT_SIGNING_KEY", signer.to_pem())
    if "CHOREO_NOTIFICATION_KEY" not in environment:
        # The user service seals reset tokens to the notification service's key, kept there too.
        opener = key_in(config.data_dir.resolve() / "event-keys" / "notification-sealing.pem")
        environment["CHOREO_NOTIFICATION_KEY"] = opener.public_key
        environment.setdefault("NOTIFICATION_SEALING_KEY", opener.to_pem())
    if "JWT_JWKS" not in environment:
        # Every service verifies tokens itself, with the user service's public keys.
        user_service = f"http://127.0.0.1:{config.ports.user}"
        environment.setdefault("JWT_JWKS_URL", f"{user_service}/api/v1/auth/jwks")
    if endpoints.embedded_broker and not config.durable_broker:
        # Memory storage answers a fetch without listing anything: poll it often, for latency.
        environment.setdefault("KAFKA_FETCH_MAX_WAIT_MS", str(FAST_FETCH_MAX_WAIT_MS))
    environment.update(
        KAFKA_BOOTSTRAP_SERVERS=endpoints.kafka_bootstrap_servers,
        STRIPE_API_BASE=endpoints.stripe_api_base,
        SENDGRID_HOST=endpoints.sendgrid_host,
        TWILIO_API_BASE=endpoints.twilio_api_base,
        PYTHONUNBUFFERED="1",  # their log lines reach the terminal as they are written
    )
    # A password-reset e-mail links to this stack's gateway, wherever its ports are.
    environment.setdefault(
        "NOTIFICATION_PASSWORD_RESET_URL",
        f"http://127.0.0.1:{config.ports.gateway}/reset-password?token=",
    )
    for service in config.services:
        port = config.ports.of(service.name)
        environment[f"{service.env_prefix}_PORT"] = str(port)
        environment[f"{service.env_prefix}_SERVICE_URL"] = f"http://127.0.0.1:{port}"
        if service.name in endpoints.database_urls:
            environment[f"{service.env_prefix}_DATABASE_URL"] = endpoints.database_urls[
                service.name
            ]
    return environment
