"""Runs one service in one process: its HTTP API, its consumers and its outbox relay.

`main.py` of each service builds a `Service` (settings, routers, subscriptions) and calls
`run()`. SIGTERM or Ctrl-C drains: uvicorn stops taking requests and finishes those in flight,
then each consumer finishes the record in hand and commits, then the relay and the producer
stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.middleware import Middleware
from uvicorn.config import STARTUP_FAILURE

from choreo import kafka
from choreo.auth import TokenVerifier, verifier_from_settings
from choreo.avro import default_store
from choreo.consumer import Consumer, Handler, RetryPolicy
from choreo.consumer.inbox import claim
from choreo.db import (
    UnitOfWork,
    UnitOfWorkFactory,
    create_engine,
    sync_dsn,
    unit_of_work_factory,
)
from choreo.dead_letters import dlq_topic, retry_topic
from choreo.errors import ChoreoError
from choreo.events import OWNER_OF_TOPIC, Event, source_of
from choreo.listener import Listener
from choreo.logs import configure_logging
from choreo.migrate import migrate
from choreo.outbox import OutboxWriter, Relay
from choreo.records import Record, SessionsRevoked, UserDeleted
from choreo.revocations import Revocations, on_sessions_revoked, on_user_deleted
from choreo.settings import ServiceSettings
from choreo.signing import PUBLISHERS, EventKeyError, EventKeys, EventSigner
from choreo.web import ApiDocs, ReadinessCheck, create_app
from choreo.web.server import Server

log = logging.getLogger(__name__)

T = TypeVar("T")

# A production ops token must be a secret nobody guesses: `openssl rand -hex 32` gives 64.
MIN_OPS_TOKEN_LENGTH = 32


@dataclass(frozen=True)
class Subscription:
    """A service applies `handler` to every `record` class event it reads (on the class's topic).

    The handler is `async def on_x(record: X, uow: UnitOfWork, *, <name>: ...)`: it gets the
    typed record and the unit of work its effects, outbox rows and inbox row commit in. Its
    keyword-only parameters are bound once, when the service is built, by name: `event` is
    the record's envelope (`choreo.events.Event`: id, time, source, traceparent), any other
    name is the service's resource of that name (`Service(resources=...)`); a parameter with
    neither a resource nor a default stops the build with `ConfigurationError`.
    """

    record: type[Record]
    handler: Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class PeriodicJob:
    """Work a service does on a timer (a sweep, a purge): `run()` once the service has started,
    then every `interval_seconds` after the last run ended, until the service stops. A run
    that raises is logged with its traceback and the next one comes at its time (a database
    or provider that is away for a while is no reason to stop). Replicas each run their own:
    the work must tolerate that (skip rows another holds, delete idempotently)."""

    name: str
    interval_seconds: float
    run: Callable[[], Awaitable[object]]


StartUpHook = Callable[[], Awaitable[None]]
"""Work done once at start-up, after the database is migrated and the broker reached, before
the service takes requests (so `/readyz` is not 200 before it is done): seeding an account."""

ResourcesOf = Callable[["Service"], Mapping[str, object]]
"""Resources made from the service's own parts (its independent unit of work, say)."""


def _then(first: Handler, second: Handler | None) -> Handler:
    """`first`, then `second` if any, in the same unit of work."""
    if second is None:
        return first

    async def both(event: Event[Record], uow: UnitOfWork) -> None:
        await first(event, uow)
        await second(event, uow)

    return both


def bind(handler: Callable[..., Awaitable[None]], resources: Mapping[str, object]) -> Handler:
    """The consumer's `Handler` (envelope, unit of work) for a typed handler: its keyword-only
    parameters bound by name, as `Subscription` says. Raises `ConfigurationError` for a
    parameter that is neither `event`, a resource nor defaulted."""
    wants_event = False
    bound: dict[str, object] = {}
    for parameter in inspect.signature(handler).parameters.values():
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        if parameter.name == "event":
            wants_event = True
        elif parameter.name in resources:
            bound[parameter.name] = resources[parameter.name]
        elif parameter.default is inspect.Parameter.empty:
            name = getattr(handler, "__qualname__", repr(handler))
            raise ConfigurationError(
                f"{name} takes {parameter.name!r}, which is not a resource of the service "
                f"(resources: {', '.join(sorted(resources)) or 'none'})"
            )

    if wants_event:

        async def with_event(event: Event[Record], uow: UnitOfWork) -> None:
            await handler(event.record, uow, event=event, **bound)

        return with_event

    async def plain(event: Event[Record], uow: UnitOfWork) -> None:
        await handler(event.record, uow, **bound)

    return plain


class ConfigurationError(ChoreoError):
    """The service is wired inconsistently (a programming error, found at start-up)."""


class Service:
    """One service's process: wiring shared by all six, built from `main.py`."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        routers: Sequence[APIRouter] = (),
        subscriptions: Sequence[Subscription] = (),
        error_statuses: Mapping[type[Exception], tuple[int, str]] | None = None,
        resources: Mapping[str, object] | ResourcesOf | None = None,
        periodic: Sequence[PeriodicJob] = (),
        on_start: Sequence[StartUpHook] = (),
        middleware: Sequence[Middleware] = (),
        server_options: Mapping[str, Any] | None = None,
        token_verifier: TokenVerifier | None = None,
        readiness: Mapping[str, ReadinessCheck] | None = None,
        docs: ApiDocs | None = None,
        start_up_warnings: Sequence[str] = (),
        listeners: Sequence[Listener] = (),
    ) -> None:
        """`resources` are the service's named parts: attributes of `app.state` for the routes'
        dependencies, and the keyword-only parameters of its handlers (`Subscription`); those
        with an `aclose()` coroutine (HTTP clients, say) are closed when the service stops.
        Given as a function, it gets the service (after its database pools exist) and returns
        them: for parts that need `independent_unit_of_work()`.

        `periodic` jobs run on their timers while the service runs; `on_start` hooks run once,
        before it serves. `middleware` wraps the app in the order given (the last outermost,
        around the kit's own). `server_options` are passed to uvicorn's `Config` over the kit's
        (`{"proxy_headers": False}`, say). A route of the service's routers whose path the kit
        also serves (`/readyz`, `/metrics`) replaces the kit's.
        `start_up_warnings` are logged when the service starts: how it runs weaker than
        production would let it (a key it was not given, say).
        `listeners` (`choreo.listener`) listen on the service's database while it runs, and
        stop as soon as it starts shutting down, before uvicorn waits for open responses: the
        streams they wake end then (`app.state.listeners`, by channel, for the routes).
        `app.state.draining` is set at that moment too, for any other response that stays open.

        The API's docs are public in dev and test, internal in prod (`/openapi.json` for the
        ops token's holders: the gateway merges it), unless `docs` says otherwise.
        """
        self.settings = settings
        self.name = f"{settings.service}_service"
        self.ops_token = _ops_token(settings)
        self._docs = docs or (ApiDocs.INTERNAL if settings.env == "prod" else ApiDocs.PUBLIC)
        self.store = default_store()
        self._subscriptions = subscriptions
        self._routers = routers
        self._error_statuses = error_statuses
        self._periodic = tuple(periodic)
        self._on_start = tuple(on_start)
        self._middleware = tuple(middleware)
        self._server_options = dict(server_options or {})
        self._extra_readiness = dict(readiness or {})
        self._start_up_warnings = tuple(start_up_warnings)
        self._listeners = tuple(listeners)
        if listeners and settings.database_dsn is None:
            raise ConfigurationError(f"{self.name} listens but has no database")
        self._draining: asyncio.Event | None = None
        self.token_verifier = token_verifier or verifier_from_settings(
            settings.jwks_url, settings.jwks_json
        )
        if self.token_verifier is None and settings.env == "prod":
            # Every route that needs a caller would answer 503 auth_unavailable.
            raise ConfigurationError(
                "JWT_JWKS_URL (the user service's /api/v1/auth/jwks) or JWT_JWKS must be set "
                "when CHOREO_ENV=prod: without the token signing keys no caller can be verified"
            )
        self.kafka_security = kafka.KafkaSecurity.from_settings(settings)  # refuses bad ones now
        self.event_signer, self.event_keys = _event_trust(settings)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: Consumer | None = None
        self.engine: AsyncEngine | None = None
        self.uow_factory: UnitOfWorkFactory | None = None
        self._independent: tuple[AsyncEngine, UnitOfWorkFactory] | None = None
        self._writer: OutboxWriter | None = None
        dsn = settings.database_dsn
        if dsn is not None:
            self.engine = create_engine(dsn)
            self._writer = OutboxWriter(
                self.store, source_of(settings.service), settings.topic, self.event_signer
            )
            self.uow_factory = unit_of_work_factory(self.engine, self._writer)
        elif subscriptions:
            raise ConfigurationError(f"{self.name} consumes events but has no database")
        self._resources = dict((resources(self) if callable(resources) else resources) or {})
        self._handlers = self._bind_subscriptions(subscriptions)

    def unit_of_work(self) -> UnitOfWorkFactory:
        """Units of work on the service's pool: one per request or handler call."""
        if self.uow_factory is None:
            raise ConfigurationError(f"{self.name} has no database")
        return self.uow_factory

    def resource(self, name: str, kind: type[T]) -> T:
        """The service's resource `name`, checked to be a `kind`; `ConfigurationError` when it
        has none of that name or it is something else."""
        resource = self._resources.get(name)
        if not isinstance(resource, kind):
            raise ConfigurationError(f"{self.name} has no {kind.__name__} resource named {name!r}")
        return resource

    def independent_unit_of_work(self) -> UnitOfWorkFactory:
        """Units of work on a small pool of their own (`INDEPENDENT_POOL_SIZE` connections,
        made at the first call, disposed when the service stops), for what must commit apart
        from the transaction in hand: a handler holding a connection and a row lock never
        waits behind the other handlers for a second connection (a charge's phase one, the
        notification service's facts)."""
        if self.settings.database_dsn is None:
            raise ConfigurationError(f"{self.name} has no database")
        if self._independent is None:
            engine = create_engine(self.settings.database_dsn, pool_size=INDEPENDENT_POOL_SIZE)
            self._independent = (engine, unit_of_work_factory(engine, self._writer))
        return self._independent[1]

    def app(self) -> FastAPI:
        app = create_app(
            self.name,
            readiness={**self._readiness(), **self._extra_readiness},
            routers=self._routers,
            lifespan=self._lifespan,
            error_statuses=self._error_statuses,
            ops_token=self.ops_token,
            docs=self._docs,
        )
        app.state.uow_factory = self.uow_factory
        app.state.listeners = {listener.channel: listener for listener in self._listeners}
        app.state.token_verifier = self.token_verifier
        if self.engine is not None:
            app.state.revocations = Revocations(self.engine)
        for name, resource in self._resources.items():
            setattr(app.state, name, resource)
        _let_the_service_routes_win(app, self._routers)
        for layer in self._middleware:
            app.add_middleware(layer.cls, *layer.args, **layer.kwargs)
        return app

    def run(self) -> None:
        """Migrate the database, then serve until SIGTERM or Ctrl-C."""
        configure_logging(self.name, self.settings.log_level, self.settings.log_format)
        if self.settings.database_dsn is not None and self.event_keys is None:
            log.warning(
                "%s verifies no event signatures (CHOREO_EVENT_KEYS is unset): whoever can "
                "write to the broker can forge its events",
                self.name,
            )
        for warning in self._start_up_warnings:
            log.warning("%s %s", self.name, warning)
        if self.settings.database_dsn is not None:
            migrate(self.settings.service, self.settings.database_dsn)
        options: dict[str, Any] = {
            "host": self.settings.host,
            "port": self.settings.port,
            "log_config": None,
            "timeout_graceful_shutdown": 10,
        }
        config = uvicorn.Config(self.app(), **(options | self._server_options))
        server = _Server(config, on_shutdown=self.drain)
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        if not server.started:
            sys.exit(STARTUP_FAILURE)  # as `uvicorn.run` does: the app's start-up failed

    def drain(self) -> None:
        """The service is shutting down: stop the listeners (ending the streams they wake) and
        set `app.state.draining`. Called by the server before it waits for open responses."""
        for listener in self._listeners:
            listener.stop()
        if self._draining is not None:
            self._draining.set()

    def _readiness(self) -> dict[str, ReadinessCheck]:
        """Database and broker, for a service that has them (the gateway has neither)."""
        engine = self.engine
        if engine is None:
            return {}

        async def database() -> None:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

        async def broker() -> None:
            if self._producer is None:
                raise ChoreoError("the broker client is not started")
            cluster = await self._producer.client.fetch_all_metadata()
            # A broker that lost its topics (an in-memory one restarted) still answers, but the
            # relay and the consumers fail on every request until they exist again.
            missing = sorted(self._topics_used() - cluster.topics())
            if missing:
                raise ChoreoError(
                    f"topic(s) missing on the broker: {', '.join(missing)}"
                    " (`choreo topics --create` makes them)"
                )

        async def consumer() -> str | None:
            """Ready while waiting out a provider's outage: the API still serves."""
            outages = self._consumer.outages() if self._consumer else []
            if not outages:
                return None
            more = f" (and {len(outages) - 1} more)" if len(outages) > 1 else ""
            return f"waiting out an outage: {outages[0]}{more}"

        checks: dict[str, ReadinessCheck] = {"database": database, "broker": broker}
        if self._subscriptions:
            checks["consumer"] = consumer
        return checks

    def _topics_used(self) -> set[str]:
        """The physical topics this service writes (its own, and its dead letters when it
        consumes) and reads (its subscriptions and its retry topic)."""
        service = self.settings.service
        names = {topic for topic, owner in OWNER_OF_TOPIC.items() if owner == service}
        if self._handlers:
            names |= {*self._handlers, dlq_topic(service), retry_topic(service)}
        return {self.settings.topic(name) for name in names}

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        self._draining = app.state.draining = asyncio.Event()
        settings = self.settings
        dsn = settings.database_dsn
        if dsn is None:
            stopping = asyncio.Event()
            await self._start_up()
            jobs = [asyncio.create_task(_every(job, stopping)) for job in self._periodic]
            try:
                yield
            finally:
                stopping.set()
                await asyncio.gather(*jobs, return_exceptions=True)
                await self._close_resources()
            return
        producer = kafka.producer(
            settings.kafka_bootstrap_servers, client_id=self.name, security=self.kafka_security
        )
        await _start_with_retry(producer)
        self._producer = producer
        relay = Relay(
            sync_dsn(dsn),
            producer,
            batch_size=settings.relay_batch_size,
            poll_interval=settings.relay_poll_interval_seconds,
            republish_window_seconds=settings.relay_republish_window_seconds,
            name=self.name,
            end_offsets=functools.partial(
                kafka.end_offsets,
                settings.kafka_bootstrap_servers,
                client_id=self.name,
                security=self.kafka_security,
            ),
        )
        stopping = asyncio.Event()
        tasks = [asyncio.create_task(relay.run(), name=f"{self.name}-relay")]
        tasks += [
            asyncio.create_task(listener.run(sync_dsn(dsn)), name=f"{self.name}-listener")
            for listener in self._listeners
        ]
        if self._subscriptions:
            tasks.append(asyncio.create_task(self._consume(producer, stopping)))
        await self._start_up()
        tasks += [asyncio.create_task(_every(job, stopping)) for job in self._periodic]
        try:
            yield
        finally:
            stopping.set()
            relay.stop()
            self.drain()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, BaseException):
                    log.error("%s: a background task failed: %r", self.name, result)
            await producer.stop()
            await self.aclose()

    async def aclose(self) -> None:
        """Close the resources and the database pools (done by the app's shutdown)."""
        await self._close_resources()
        if self.engine is not None:
            await self.engine.dispose()
        if self._independent is not None:
            await self._independent[0].dispose()
            self._independent = None

    async def _start_up(self) -> None:
        for hook in self._on_start:
            await hook()

    async def _close_resources(self) -> None:
        for name, resource in self._resources.items():
            close = getattr(resource, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:
                    log.exception("%s: closing %s failed", self.name, name)

    async def _consume(self, producer: AIOKafkaProducer, stopping: asyncio.Event) -> None:
        """Run the consumer until `stopping`; a consumer that crashes is replaced."""
        while not stopping.is_set():
            consumer = self._consumer = self.consumer(producer)
            run = asyncio.create_task(consumer.run(), name=f"{self.name}-consumer")
            stop = asyncio.create_task(stopping.wait())
            await asyncio.wait({run, stop}, return_when=asyncio.FIRST_COMPLETED)
            consumer.stop()
            stop.cancel()
            try:
                await run
            except Exception:
                log.exception("%s: consumer failed; starting a new one", self.name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), 2.0)

    def _bind_subscriptions(
        self, subscriptions: Sequence[Subscription]
    ) -> dict[str, dict[str, Handler]]:
        """Each logical topic's handlers by record type, bound to the resources once."""
        handlers: dict[str, dict[str, Handler]] = {}
        for subscription in subscriptions:
            by_type = handlers.setdefault(subscription.record.TOPIC, {})
            name = subscription.record.type_name()
            if name in by_type:
                raise ConfigurationError(f"{self.name} subscribes to {name} twice")
            by_type[name] = bind(subscription.handler, self._resources)
        if not handlers:
            return handlers
        # Every consuming service stops accepting the tokens of a deleted user and of an ended
        # session (choreo.revocations).
        user_events = handlers.setdefault(UserDeleted.TOPIC, {})
        for record, revoking in (
            (UserDeleted, on_user_deleted),
            (SessionsRevoked, on_sessions_revoked),
        ):
            name = record.type_name()
            user_events[name] = _then(bind(revoking, {}), user_events.get(name))
        return handlers

    async def apply(self, event: Event[Record]) -> bool:
        """Apply `event` as this service's consumer would, without a broker: the inbox claim
        and the handler in one unit of work. True when applied, False when the inbox already
        held it (a duplicate). Raises what the handler raises (a consumer would retry or
        dead-letter it), and `ConfigurationError` for a record the service does not subscribe
        to. No signature or source check: for tests of handlers on a real database, and
        tools."""
        handler = self._handlers.get(event.topic, {}).get(event.type)
        if handler is None:
            raise ConfigurationError(f"{self.name} does not subscribe to {event.type}")
        async with self.unit_of_work()() as uow:
            if not await claim(uow, self.name, event.id):
                return False
            await handler(event, uow)
        return True

    def consumer(self, producer: AIOKafkaProducer) -> Consumer:
        """The consumer of this service's subscriptions (not started); its `handle(record)`
        applies one record exactly as the running service would."""
        settings = self.settings
        handlers = {
            settings.topic(topic): dict(by_type) for topic, by_type in self._handlers.items()
        }
        return Consumer(
            name=self.name,
            consumer=kafka.consumer(
                settings.kafka_bootstrap_servers,
                group_id=settings.topic(self.name),
                client_id=self.name,
                fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
                security=self.kafka_security,
            ),
            producer=producer,
            handlers=handlers,
            uow_factory=self.unit_of_work(),
            store=self.store,
            dlq_topic=settings.topic(dlq_topic(settings.service)),
            retry_topic=settings.topic(retry_topic(settings.service)),
            retry=RetryPolicy(
                max_attempts=settings.consumer_max_attempts,
                initial_seconds=settings.consumer_retry_initial_seconds,
                max_seconds=settings.consumer_retry_max_seconds,
            ),
            event_keys=self.event_keys,
        )


class _Server(Server):
    """The kit's uvicorn server (`choreo.web.server`), telling the service when it starts
    shutting down: uvicorn then waits (up to `timeout_graceful_shutdown`) for open responses to
    end, and the app's own shutdown comes only after, too late for a response that never ends
    by itself (a stream)."""

    def __init__(self, config: uvicorn.Config, *, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_shutdown()
        await super().shutdown(sockets)


def _ops_token(settings: ServiceSettings) -> str | None:
    """The bearer token of `/metrics` (and of internal docs); prod refuses to run without one,
    since its metrics and API description would otherwise be open to whoever reaches it."""
    token = settings.ops_token.get_secret_value() if settings.ops_token else ""
    if settings.env == "prod" and len(token) < MIN_OPS_TOKEN_LENGTH:
        raise ConfigurationError(
            f"CHOREO_OPS_TOKEN must be set to a secret of at least {MIN_OPS_TOKEN_LENGTH} "
            "characters when CHOREO_ENV=prod: /metrics and the services' API documents are "
            "served to its holders only (Prometheus, the gateway)"
        )
    return token or None


def _event_trust(settings: ServiceSettings) -> tuple[EventSigner | None, EventKeys | None]:
    """The service's event signer and the publishers' public keys (choreo.signing), checked
    now: a key that cannot be read, a publisher whose records its consumers would reject, or,
    in prod, a service with a database that would sign or verify nothing, stops the start."""
    service = settings.service
    prefix = f"{service.upper()}_"
    try:
        signer = (
            EventSigner.from_pem(settings.event_signing_key.get_secret_value())
            if settings.event_signing_key
            else None
        )
    except EventKeyError as error:
        raise ConfigurationError(f"{prefix}EVENT_SIGNING_KEY: {error}") from None
    try:
        keys = EventKeys.from_json(settings.event_keys) if settings.event_keys else None
    except EventKeyError as error:
        raise ConfigurationError(str(error)) from None
    if settings.database_dsn is None:
        return signer, keys
    publishes = service in PUBLISHERS
    if settings.env == "prod" and (keys is None or (publishes and signer is None)):
        raise ConfigurationError(
            "CHOREO_EVENT_KEYS"
            + (f" and {prefix}EVENT_SIGNING_KEY" if publishes else "")
            + " must be set when CHOREO_ENV=prod: unsigned events can be forged by whoever "
            "can write to the broker (`choreo event-keys` makes a set)"
        )
    if keys is not None and publishes:
        if signer is None:
            raise ConfigurationError(
                f"CHOREO_EVENT_KEYS is set but {prefix}EVENT_SIGNING_KEY is not: every "
                f"consumer would reject the {service} service's events"
            )
        if not keys.lists(service, signer.public_key):
            raise ConfigurationError(
                f"CHOREO_EVENT_KEYS does not list the public key of {prefix}EVENT_SIGNING_KEY "
                f"({signer.public_key}): every consumer would reject the {service} service's "
                "events"
            )
    return signer, keys


async def _start_with_retry(producer: AIOKafkaProducer, attempts: int = 30) -> None:
    """Start the producer, waiting for a broker that is still coming up."""
    for attempt in range(1, attempts + 1):
        try:
            await producer.start()
            return
        except Exception as error:
            if attempt == attempts:
                raise
            log.warning("broker not reachable yet (%s); retrying", error)
            await asyncio.sleep(1.0)


INDEPENDENT_POOL_SIZE = 8
"""Connections a service's independent pool keeps (and half as many again while busier): each
handler that uses it commits one short transaction at a time on it, but handlers of several
partitions run at once. With 2, the notification service under load opened a connection for
~3 of 4 sagas (an overflow connection is closed when returned): 1,104 sessions in `choreo
bench`'s 1,450 sagas, each a PostgreSQL backend started and torn down (issue 14)."""


async def _every(job: PeriodicJob, stopping: asyncio.Event) -> None:
    """Run `job` now, then every `job.interval_seconds` until `stopping` (see `PeriodicJob`)."""
    while not stopping.is_set():
        try:
            await job.run()
        except Exception:
            log.exception("%s failed; trying again in %g s", job.name, job.interval_seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), job.interval_seconds)


def _let_the_service_routes_win(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Drop the kit's routes whose path one of the service's routers also serves."""
    own = {
        route.endpoint
        for router in routers
        for route in router.routes
        if hasattr(route, "endpoint")
    }
    paths = {
        getattr(route, "path", None)
        for router in routers
        for route in router.routes
        if hasattr(route, "endpoint")
    }
    app.router.routes[:] = [
        route
        for route in app.router.routes
        if getattr(route, "path", None) not in paths or getattr(route, "endpoint", None) in own
    ]
