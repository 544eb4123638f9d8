"""The whole system on one machine: the embedded parts the environment does not provide, the
databases and topics, then the six services, all under one supervisor (`choreo up`, e2e tests)."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import psycopg

from choreo.errors import ChoreoError
from choreo.kafka import KafkaSecurity, ensure_topics
from choreo.stack.broker import TansuBroker
from choreo.stack.config import (
    TOPICS,
    StackConfig,
    resolve_endpoints,
    service_environment,
)
from choreo.stack.errors import StackError
from choreo.stack.postgres import EmbeddedPostgres, create_database
from choreo.stack.probes import http_ok
from choreo.stack.process import OutputSink, ProcessSpec, log_output
from choreo.stack.s3 import SeaweedS3
from choreo.stack.sendgrid_sink import SendGridSink
from choreo.stack.stripe import LocalStripe
from choreo.stack.supervisor import Progress, Supervisor
from choreo.stack.twilio_sink import TwilioSink


@dataclass(frozen=True)
class Link:
    """Where a user reaches one part."""

    part: str
    url: str
    embedded: bool
    """False when the environment gave the part."""
    note: str = ""


class Stack:
    """Start with `start()` (blocks until every part is ready), keep alive with `watch()`,
    stop with `stop()` or by leaving the `with` block."""

    def __init__(self, config: StackConfig, output: OutputSink = log_output) -> None:
        self.config = config
        self.endpoints = resolve_endpoints(config)
        self.supervisor = Supervisor(
            output,
            restart_timeout=config.readiness_timeout,
            unready_grace=config.unready_grace,
        )
        self.data_dir = config.data_dir.resolve()

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, progress: Progress | None = None) -> None:
        """Start the infrastructure, then the services; returns once every part is ready."""
        self.start_infrastructure(progress)
        self.start_services(progress)

    def start_infrastructure(self, progress: Progress | None = None) -> None:
        """Start the embedded parts the environment does not give, and create the databases and
        topics (on the embedded parts or on those given)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for group in self._infrastructure():
            self.supervisor.start(group, timeout=self.config.readiness_timeout, progress=progress)
        if not self.endpoints.embedded_postgres:
            self._create_databases()
        if not self.endpoints.embedded_broker:
            self._create_topics()

    def start_services(self, progress: Progress | None = None) -> None:
        """Start the services and wait until each one's /readyz answers 200."""
        self.supervisor.start(
            self._services(), timeout=self.config.readiness_timeout, progress=progress
        )

    def watch(self) -> None:
        """Block while the stack runs, restarting each part that exits or stops answering, on
        its own (see `Supervisor.watch`)."""
        self.supervisor.watch()

    def stop(self) -> None:
        self.supervisor.stop()

    def url_of(self, service: str) -> str:
        return f"http://127.0.0.1:{self.config.ports.of(service)}"

    def admin(self) -> tuple[str, str] | None:
        """The admin's (email, password) the user service seeds, when known."""
        environment = service_environment(self.config, self.endpoints)
        email = environment.get("CHOREO_ADMIN_EMAIL")
        password = environment.get("CHOREO_ADMIN_PASSWORD")
        return (email, password) if email and password else None

    def links(self) -> list[Link]:
        endpoints = self.endpoints
        links: list[Link] = []
        for service in self.config.services:
            url = self.url_of(service.name)
            if service.name == "gateway":
                # Its URLs as rows of their own: a URL in the notes column wraps or is cut.
                links.append(Link("gateway", f"{url}/api/v1", True, "the API: every request"))
                links.append(Link("docs", f"{url}/docs", True, "the API's pages (OpenAPI)"))
            else:
                links.append(Link(service.name, url, True))
        if endpoints.database_server is not None:
            databases = ", ".join(endpoints.databases_to_create)
            links.append(
                Link(
                    "postgres",
                    _without_password(endpoints.database_server),
                    endpoints.embedded_postgres,
                    f"databases {databases}",
                )
            )
        elif endpoints.database_urls:
            links.append(Link("postgres", "<SERVICE>_DATABASE_URL", False))
        links += [
            Link(
                "broker",
                endpoints.kafka_bootstrap_servers,
                endpoints.embedded_broker,
                self._broker_storage() if endpoints.embedded_broker else "",
            ),
            Link("stripe", endpoints.stripe_api_base, endpoints.embedded_stripe),
            Link(
                "sendgrid",
                f"{endpoints.sendgrid_host}/messages",
                endpoints.embedded_sendgrid,
                "the e-mails sent",
            ),
            Link(
                "twilio",
                f"{endpoints.twilio_api_base}/messages",
                endpoints.embedded_twilio,
                "the SMS sent",
            ),
        ]
        return links

    def _broker_storage(self) -> str:
        if self.config.durable_broker:
            return f"records in S3 (SeaweedFS, {self.data_dir / 's3'}) at http://127.0.0.1:{self.config.ports.s3}"
        return "records in memory: lost when it stops"

    def _infrastructure(self) -> list[list[ProcessSpec]]:
        """The embedded parts in groups, each started once the one before is ready (and
        stopped after the ones after it): the durable broker's S3 store comes first, since a
        broker that writes to a store not ready yet loses what it wrote (topics, seen)."""
        config, endpoints, ports = self.config, self.endpoints, self.config.ports
        restart = config.restart
        environment = dict(config.environment)
        first: list[ProcessSpec] = []
        specs: list[ProcessSpec] = []
        if endpoints.embedded_postgres:
            postgres = EmbeddedPostgres(self.data_dir / "pg", ports.postgres)
            specs.append(
                dataclasses.replace(
                    postgres.spec, after_ready=self._create_databases, restart=restart
                )
            )
        if endpoints.embedded_broker:
            broker_environment = environment
            storage_url = "memory://tansu/"
            if config.durable_broker:
                s3 = SeaweedS3(ports.s3, self.data_dir / "s3", environment=environment)
                first.append(dataclasses.replace(s3.spec, restart=restart))
                broker_environment = {**environment, **s3.client_environment()}
                storage_url = s3.storage_url
            broker = TansuBroker(ports.broker, storage_url, environment=broker_environment)
            specs.append(
                dataclasses.replace(broker.spec, after_ready=self._create_topics, restart=restart)
            )
        if endpoints.embedded_stripe:
            stripe = LocalStripe(
                ports.stripe,
                self.data_dir / "stripe.pickle",
                python=config.python,
                environment=environment,
                # Its PaymentIntents' events reach the payment service as Stripe's would: at
                # the gateway, signed with STRIPE_WEBHOOK_SECRET (the dev default unless set).
                webhook_url=f"http://127.0.0.1:{ports.gateway}/api/v1/webhooks/stripe",
            )
            specs.append(dataclasses.replace(stripe.spec, restart=restart))
        if endpoints.embedded_sendgrid:
            sendgrid = SendGridSink(ports.sendgrid, python=config.python, environment=environment)
            specs.append(dataclasses.replace(sendgrid.spec, restart=restart))
        if endpoints.embedded_twilio:
            twilio = TwilioSink(ports.twilio, python=config.python, environment=environment)
            specs.append(dataclasses.replace(twilio.spec, restart=restart))
        return [group for group in (first, specs) if group]

    def _services(self) -> list[ProcessSpec]:
        environment = service_environment(self.config, self.endpoints)
        specs = []
        for service in self.config.services:
            port = self.config.ports.of(service.name)
            specs.append(
                ProcessSpec(
                    name=service.name,
                    command=[self.config.python, "-m", service.module],
                    ready=http_ok(f"http://127.0.0.1:{port}/readyz"),
                    alive=http_ok(f"http://127.0.0.1:{port}/healthz"),
                    port=port,
                    environment=environment,
                    restart=self.config.restart,
                    stop_grace=15.0,
                )
            )
        return specs

    def _create_databases(self) -> None:
        server = self.endpoints.database_server
        if server is None:
            return
        try:
            created = [
                name for name in self.endpoints.databases_to_create if create_database(server, name)
            ]
        except psycopg.Error as error:
            raise StackError(
                f"cannot create the databases on {_without_password(server)}: {error}"
            ) from error
        if created:
            self.supervisor.say(f"created databases {', '.join(created)}")

    def _create_topics(self) -> None:
        bootstrap_servers = self.endpoints.kafka_bootstrap_servers
        try:
            # As the services will reach it: the environment's TLS and SASL, if any.
            security = KafkaSecurity.from_environment(self.config.environment)
            created = asyncio.run(
                ensure_topics(
                    bootstrap_servers, TOPICS, partitions=self.config.partitions, security=security
                )
            )
        except ChoreoError as error:
            raise StackError(f"cannot create the topics on {bootstrap_servers}: {error}") from error
        if created:
            self.supervisor.say(f"created topics {', '.join(created)}")


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
