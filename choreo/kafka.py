"""Kafka client factories (settings every part of Choreo relies on) and topic admin."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.structs import RecordMetadata
from pydantic import SecretStr

from choreo.errors import ChoreoError, TransientError
from choreo.settings import ServiceSettings

log = logging.getLogger(__name__)

# How long a fetch may wait for records (Kafka's `fetch.max.wait.ms`, whose default this is).
# Apache Kafka answers as soon as records arrive. Tansu re-reads its storage at halving intervals
# within the wait, so there the wait bounds a saga hop's latency (bench/relay.py, memory storage:
# p50 commit -> consume 132 ms at 500 ms, 8 ms at 10 ms), and its S3 storage must also list a
# partition's objects, from the first, within the wait: what it has not listed when the wait
# runs out it does not return. On moto that listing takes ~130 ms per 1,000 objects, so at 20 ms
# a consumer stalls for good once a partition holds a few hundred (measured: 300 one-record
# batches, 0 fetched in 60 s at 20 ms, all in 0.7 s at 500 ms). The embedded memory broker has
# no listing, and `choreo up` runs its services with FAST_FETCH_MAX_WAIT_MS instead. Tansu checks
# for records when a fetch arrives and then after half the wait, three quarters, ...: a record
# that arrives meanwhile waits a third of the wait on average. 30 ms against 60 (session 16):
# at 10 orders/s POST -> outcome p50 100.9 against 117.4 ms, the broker 36.0 against 24.5 ms of
# CPU per saga; closed-loop at 16 (two stacks side by side), where fetches mostly return
# records at once, 8.08 against 8.17 sagas/s and 105.3 against 102.7 ms per saga. Not shorter,
# because Tansu's CPU grows with the fetches it answers. `choreo bench`, memory broker,
# 20 against 60 ms in an earlier session: at 5 orders/s the broker took 89 against 40 ms of CPU
# per saga and POST -> outcome p50 was 116 against 107 ms; closed-loop at 16, 14.1 against 16.5
# sagas/s, 125 against 107 ms of CPU per saga. Longer waits save little more and cost latency
# (10 orders/s: p50 132 ms at 60, 240 at 150, 336 at 300).
FETCH_MAX_WAIT_MS = 500
FAST_FETCH_MAX_WAIT_MS = 30
# A group member that stops heartbeating (killed, hung) keeps its partitions this long before
# the group rebalances them (Kafka's session.timeout.ms; its default is 45 s).
SESSION_TIMEOUT_MS = 10_000


class BrokerUnavailableError(TransientError):
    """The broker could not be reached."""


class KafkaSecurityError(ChoreoError):
    """The broker's TLS or SASL settings contradict each other or name unusable files."""


# What aiokafka's SCRAM client raises, instead of SaslAuthenticationFailed, when the broker ends
# the exchange with an RFC 5802 server-error (`e=unknown-user`, Tansu's answer to every SCRAM
# login) or with a signature that proves it does not know the password.
SCRAM_REFUSALS = (KeyError, ValueError)

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class KafkaSecurity:
    """How every client of the kit reaches the broker: over TLS (`SSL`), as a SASL principal
    (`SASL_PLAINTEXT`), both (`SASL_SSL`, production) or neither (`PLAINTEXT`, the embedded
    broker). Built once at start-up; an inconsistent combination raises `KafkaSecurityError`
    naming the variables to fix, so a service never starts half-configured."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    """The CA that signed the broker's certificate; the system's CAs when unset."""
    ssl_certfile: Path | None = None
    """This client's certificate, for brokers that require mutual TLS."""
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise KafkaSecurityError("; ".join(problems))
        if self.uses_tls:
            self.ssl_context()  # unreadable PEM files fail here, at start-up

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> KafkaSecurity:
        """A service's; warns when, in prod, the broker cannot tell it from other clients."""
        security = cls(
            protocol=settings.kafka_security_protocol.strip().upper(),
            sasl_mechanism=settings.kafka_sasl_mechanism or None,
            sasl_username=settings.kafka_sasl_username or None,
            sasl_password=settings.kafka_sasl_password,
            ssl_cafile=_path(settings.kafka_ssl_cafile),
            ssl_certfile=_path(settings.kafka_ssl_certfile),
            ssl_keyfile=_path(settings.kafka_ssl_keyfile),
            ssl_check_hostname=settings.kafka_ssl_check_hostname,
        )
        # Only a service with a database reaches the broker (its relay and consumer).
        uses_broker = settings.database_dsn is not None
        if settings.env == "prod" and uses_broker and not security.authenticates:
            log.warning(
                "KAFKA_SECURITY_PROTOCOL=%s in prod: the broker cannot tell this service from "
                "any other client, so its ACLs cannot stop others publishing its events",
                security.protocol,
            )
        return security

    @classmethod
    def from_environment(
        cls, environment: Mapping[str, str], *, password: SecretStr | None = None
    ) -> KafkaSecurity:
        """From the services' variables (`KAFKA_SECURITY_PROTOCOL`, ...), as the CLI sees them;
        unset and empty are alike. `password` overrides `KAFKA_SASL_PASSWORD`."""

        def get(name: str) -> str | None:
            return environment.get(name, "").strip() or None

        if password is None and environment.get("KAFKA_SASL_PASSWORD"):
            password = SecretStr(environment["KAFKA_SASL_PASSWORD"])
        check_hostname = (get("KAFKA_SSL_CHECK_HOSTNAME") or "true").lower()
        if check_hostname not in _TRUE + _FALSE:
            raise KafkaSecurityError(
                f"KAFKA_SSL_CHECK_HOSTNAME={check_hostname!r} is not a boolean: write true or false"
            )
        return cls(
            protocol=(get("KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper(),
            sasl_mechanism=get("KAFKA_SASL_MECHANISM"),
            sasl_username=get("KAFKA_SASL_USERNAME"),
            sasl_password=password,
            ssl_cafile=_path(get("KAFKA_SSL_CAFILE")),
            ssl_certfile=_path(get("KAFKA_SSL_CERTFILE")),
            ssl_keyfile=_path(get("KAFKA_SSL_KEYFILE")),
            ssl_check_hostname=check_hostname in _TRUE,
        )

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def authenticates(self) -> bool:
        """True when the broker learns which principal this client is (by SASL or a client
        certificate), which its ACLs need."""
        return self.uses_sasl or self.ssl_certfile is not None

    def _problems(self) -> list[str]:
        if self.protocol not in PROTOCOLS:
            return [f"KAFKA_SECURITY_PROTOCOL={self.protocol!r} is none of {', '.join(PROTOCOLS)}"]
        protocol = f"KAFKA_SECURITY_PROTOCOL={self.protocol}"
        mechanisms = _and(SASL_MECHANISMS, "or")
        problems = []
        password = self.sasl_password.get_secret_value() if self.sasl_password else None
        sasl = {
            "KAFKA_SASL_MECHANISM": self.sasl_mechanism,
            "KAFKA_SASL_USERNAME": self.sasl_username,
            "KAFKA_SASL_PASSWORD": password,
        }
        if self.uses_sasl:
            if missing := [name for name, value in sasl.items() if not value]:
                needs = _and(missing).replace("MECHANISM", f"MECHANISM ({mechanisms})")
                problems.append(f"{protocol} needs {needs}")
            if self.sasl_mechanism and self.sasl_mechanism not in SASL_MECHANISMS:
                problems.append(
                    f"KAFKA_SASL_MECHANISM={self.sasl_mechanism!r} is none of {mechanisms}"
                )
        elif given := [name for name, value in sasl.items() if value]:
            problems.append(
                f"{', '.join(given)} set but {protocol} does not authenticate: set it to "
                "SASL_SSL, or unset them"
            )
        files = {
            "KAFKA_SSL_CAFILE": self.ssl_cafile,
            "KAFKA_SSL_CERTFILE": self.ssl_certfile,
            "KAFKA_SSL_KEYFILE": self.ssl_keyfile,
        }
        named = {name: file for name, file in files.items() if file is not None}
        if named and not self.uses_tls:
            problems.append(
                f"{', '.join(named)} set but {protocol} does not use TLS: set it to SSL or "
                "SASL_SSL, or unset them"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            problems.append("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE, the certificate it signs")
        problems += [
            f"{name}={file}: no such file" for name, file in named.items() if not file.is_file()
        ]
        return problems

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context of a client: the broker's certificate checked against the CA (and its
        name against the address, unless `ssl_check_hostname` is off), plus this client's
        certificate for mutual TLS."""
        try:
            context: ssl.SSLContext = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        except (ssl.SSLError, OSError) as error:
            files = ", ".join(str(f) for f in (self.ssl_cafile, self.ssl_certfile) if f)
            raise KafkaSecurityError(f"cannot load the TLS files {files}: {error}") from None
        context.check_hostname = self.ssl_check_hostname
        return context

    def client_options(self) -> dict[str, Any]:
        """The keyword arguments of every aiokafka client (producer, consumer, admin)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl and self.sasl_password is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return options


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _and(words: Sequence[str], conjunction: str = "and") -> str:
    return f" {conjunction} ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


PLAINTEXT = KafkaSecurity()
"""No TLS and no SASL: the embedded broker."""


def producer(
    bootstrap_servers: str, *, client_id: str = "choreo", security: KafkaSecurity = PLAINTEXT
) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica (`acks=all`).

    Idempotence stays off: Tansu does not implement idempotent producers, and the consumers'
    inbox makes redelivery harmless anyway. aiokafka keeps one batch in flight per partition,
    so records of one key are not reordered by retries.

    No linger (`linger.ms` 0, aiokafka's default): a relay sends a whole read of the outbox
    before it yields to the event loop (aiokafka's `send` appends to the batch without
    waiting when it has room), so its records share batches anyway, and a linger only held
    each batch back: 2 ms on every hop of the saga with the 2 ms used before.
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        linger_ms=0,
        max_batch_size=256 * 1024,
        request_timeout_ms=15_000,
        retry_backoff_ms=200,
        **security.client_options(),
    )


def consumer(
    bootstrap_servers: str,
    *,
    group_id: str,
    topics: Iterable[str] = (),
    client_id: str = "choreo",
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
    security: KafkaSecurity = PLAINTEXT,
) -> AIOKafkaConsumer:
    """A group consumer with manual commits that starts from the earliest unseen record.

    Without `topics` it subscribes to nothing: `choreo.consumer.Consumer` subscribes itself,
    with its rebalance listener.
    """
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_uncommitted",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=1_000,
        max_poll_interval_ms=300_000,
        fetch_max_wait_ms=fetch_max_wait_ms,
        **security.client_options(),
    )


async def end_offsets(
    bootstrap_servers: str,
    partitions: Iterable[TopicPartition],
    *,
    client_id: str = "choreo",
    security: KafkaSecurity = PLAINTEXT,
) -> dict[TopicPartition, int]:
    """Where each partition's log ends now (the offset its next record will take), asked of
    the broker by a consumer of no group (Kafka's ListOffsets, latest). Raises aiokafka's
    errors (KafkaError) when the broker cannot say, for instance of a partition it lacks."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        enable_auto_commit=False,
        **security.client_options(),
    )
    await reader.start()
    try:
        return dict(await reader.end_offsets(list(partitions)))
    finally:
        await reader.stop()


async def send_record(
    producer: AIOKafkaProducer,
    topic: str,
    *,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    partition: int | None = None,
) -> RecordMetadata:
    """Send any record Kafka can hold and wait for its acknowledgement.

    Without `partition`, the key decides it as usual. `AIOKafkaProducer.send` refuses a record
    with neither key nor value, which other clients can produce; such a record goes as a batch
    of its own, to `partition` or else partition 0.
    """
    if key is not None or value is not None:
        return await producer.send_and_wait(
            topic, value, key=key, headers=list(headers), partition=partition
        )
    batch = producer.create_batch()
    batch.append(key=None, value=None, timestamp=None, headers=list(headers))
    batch.close()
    return await (await producer.send_batch(batch, topic, partition=partition or 0))


async def ensure_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    *,
    partitions: int = 6,
    replication_factor: int = 1,
    timeout: float = 30.0,
    security: KafkaSecurity = PLAINTEXT,
) -> list[str]:
    """Create the topics of `names` that are missing, each with `partitions` partitions and
    `replication_factor` replicas; return those created. Existing topics are left as they are.
    Raises BrokerUnavailableError when the broker cannot be reached within `timeout` seconds."""
    wanted = list(dict.fromkeys(names))
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=10_000,
        **security.client_options(),
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [n for n in wanted if n not in existing]
            if missing:
                new = [NewTopic(n, partitions, replication_factor) for n in missing]
                # Another process may create them first: that is as good.
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(new)
            return missing
    except (KafkaConnectionError, TimeoutError, *SCRAM_REFUSALS) as error:
        reason = await connection_problem(bootstrap_servers, security) or error
        raise BrokerUnavailableError(f"broker {bootstrap_servers} unreachable: {reason}") from error
    except KafkaError as error:
        message = f"topic admin on {bootstrap_servers} failed: {error}"
        raise BrokerUnavailableError(message) from error
    finally:
        await admin.close()


async def connection_problem(
    bootstrap_servers: str, security: KafkaSecurity, timeout: float = 5.0
) -> str | None:
    """The TLS or SASL failure that keeps clients from the broker, in words an operator can act
    on; None when there is none to name (nothing listens there, or everything works).

    aiokafka's clients only say "Unable to bootstrap": the TLS or SASL error behind it goes to
    their log. This opens one connection to the first bootstrap server as they would (TLS, then
    SASL, then a metadata request) and names the step that failed.
    """
    host, port, _ = collect_hosts(bootstrap_servers, randomize=False)[0]
    refused = (
        f"the broker refused SASL authentication as {security.sasl_username!r} "
        f"({security.sasl_mechanism}): check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
    )
    try:
        async with asyncio.timeout(timeout):
            connection = await create_conn(
                host, port, client_id="choreo-probe", **security.client_options()
            )
            try:
                await connection.send(MetadataRequest([]))
            finally:
                connection.close()
    except ssl.SSLCertVerificationError as error:
        if error.verify_code in _NAME_MISMATCH:
            fix = (
                "it must name the address in KAFKA_BOOTSTRAP_SERVERS (or, knowing the risk, "
                "KAFKA_SSL_CHECK_HOSTNAME=false)"
            )
        else:
            fix = "KAFKA_SSL_CAFILE must name the CA that signed it"
        return f"the broker's TLS certificate is refused ({error.verify_message}): {fix}"
    except ssl.SSLError as error:
        return f"the TLS handshake failed ({error.reason or error}): does the broker speak TLS?"
    except SaslAuthenticationFailed:
        return refused
    except SCRAM_REFUSALS:
        if not security.uses_sasl:
            raise
        return refused
    except UnsupportedSaslMechanismError as error:
        return f"the broker does not offer KAFKA_SASL_MECHANISM={security.sasl_mechanism}: {error}"
    except KafkaConnectionError as error:
        # Connected, then cut off: the broker did not like what this client said.
        if security.uses_sasl:
            question = f"does it offer KAFKA_SASL_MECHANISM={security.sasl_mechanism}?"
        elif security.uses_tls:
            question = "does it speak TLS, or want a client certificate or SASL (SASL_SSL)?"
        else:
            question = "does it require TLS or SASL (SSL, SASL_SSL)?"
        return (
            f"the broker closed the connection ({error}); with "
            f"KAFKA_SECURITY_PROTOCOL={security.protocol}: {question}"
        )
    except TimeoutError:
        # A broker that takes the TCP connection but never answers the TLS handshake is
        # reading the handshake as a Kafka request: it does not speak TLS.
        if security.uses_tls and await _accepts_connections(host, port):
            return f"no answer to the TLS handshake in {timeout:g} s: does the broker speak TLS?"
        return None
    except (KafkaError, OSError):
        return None
    return None


_NAME_MISMATCH = (62, 64)  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


async def _accepts_connections(host: str, port: int) -> bool:
    try:
        async with asyncio.timeout(2.0):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True
