"""The kit's clients against a broker that wants TLS, a client certificate or SASL: what works,
and what an operator is told when it does not.

The broker is the embedded Tansu (510f3e2), which cannot do all of it. It serves no TLS (see
the first test), so TLS is served by `TlsFront`, a TLS listener on loopback in front of Tansu's
plaintext port that Tansu advertises as its own address: the clients' TLS (CA, hostname, client
certificate) is real, against OpenSSL's server side. SASL is Tansu's own (`--authentication`),
but no login can succeed there: its memory and S3 storage keep no SCRAM credentials (every
SCRAM login ends in `e=unknown-user`), and its SASL server has no PLAIN (it drops the
connection). So these tests show the refusals for real; the keyword arguments of a login that
succeeds are unit-tested (tests/unit/choreo/test_kafka_security.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest
from typer.testing import CliRunner

from choreo import kafka
from choreo.cli import app
from choreo.kafka import BrokerUnavailableError, KafkaSecurity
from choreo.stack.broker import TansuBroker
from choreo.stack.errors import PartExitedError
from choreo.stack.process import ProcessSpec
from choreo.testing import free_port
from tests.certificates import TlsFiles, make_tls_files

runner = CliRunner()


class Tansu(TansuBroker):
    """Tansu on its own port that advertises `advertised_port` (a `TlsFront`'s, so that every
    connection a client makes after bootstrap goes through the front too), with extra flags."""

    def __init__(self, advertised_port: int | None = None, *flags: str) -> None:
        super().__init__(free_port())
        self.advertised_port = advertised_port or self.port
        self.flags = flags

    @property
    def spec(self) -> ProcessSpec:
        spec = super().spec
        command = list(spec.command)
        advertised = command.index("--advertised-listener-url") + 1
        command[advertised] = f"tcp://127.0.0.1:{self.advertised_port}"
        return dataclasses.replace(spec, command=[*command, *self.flags])


class TlsFront:
    """A TLS listener on 127.0.0.1 that relays each connection to a plaintext port; it asks
    for a client certificate signed by `client_ca` when one is given (mutual TLS)."""

    def __init__(
        self, port: int, target_port: int, tls: TlsFiles, *, client_ca: Path | None = None
    ) -> None:
        self.port = port
        self.target_port = target_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(tls.server_certificate, tls.server_key)
        if client_ca is not None:
            self.context.load_verify_locations(client_ca)
            self.context.verify_mode = ssl.CERT_REQUIRED
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> TlsFront:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _close(self) -> None:
        self._server.close()
        relays = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in relays:
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)

    async def _serve(self) -> asyncio.Server:
        return await asyncio.start_server(
            self._relay, "127.0.0.1", self.port, ssl=self.context, ssl_handshake_timeout=5
        )

    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        broker_in, broker_out = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(client_in, broker_out), pipe(broker_in, client_out))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@contextlib.contextmanager
def fronted_tansu(tls: TlsFiles, *flags: str, client_ca: Path | None = None) -> Iterator[TlsFront]:
    """Tansu behind a `TlsFront` (its only advertised address)."""
    front_port = free_port()
    with (
        Tansu(front_port, *flags) as broker,
        TlsFront(front_port, broker.port, tls, client_ca=client_ca) as front,
    ):
        yield front


def ssl_security(tls: TlsFiles, **more: str) -> KafkaSecurity:
    return KafkaSecurity.from_environment(
        {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(tls.ca), **more}
    )


def sasl_security(
    protocol: str, mechanism: str, tls: TlsFiles | None = None, password: str = "s3cret"
) -> KafkaSecurity:
    environment = {
        "KAFKA_SECURITY_PROTOCOL": protocol,
        "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SASL_USERNAME": "order_service",
        "KAFKA_SASL_PASSWORD": password,
    }
    if tls is not None:
        environment["KAFKA_SSL_CAFILE"] = str(tls.ca)
    return KafkaSecurity.from_environment(environment)


async def round_trip(bootstrap_servers: str, security: KafkaSecurity) -> tuple[bytes, bytes]:
    """Create a topic, produce one record and consume it, all with the kit's own clients."""
    topic = f"secure-{uuid.uuid4().hex[:8]}"
    assert await kafka.ensure_topics(
        bootstrap_servers, [topic], partitions=1, security=security
    ) == [topic]
    producer = kafka.producer(bootstrap_servers, security=security)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"paid", key=b"order-1")
    finally:
        await producer.stop()
    consumer = kafka.consumer(
        bootstrap_servers, group_id=f"reader-{topic}", topics=[topic], security=security
    )
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            record = await consumer.getone()
    finally:
        await consumer.stop()
    assert record.key is not None
    assert record.value is not None
    return record.key, record.value


async def refusal(bootstrap_servers: str, security: KafkaSecurity) -> str:
    """What the kit says when its clients cannot use the broker."""
    with pytest.raises(BrokerUnavailableError) as refused:
        await kafka.ensure_topics(
            bootstrap_servers, ["never"], partitions=1, timeout=10, security=security
        )
    return str(refused.value)


async def test_tansu_cannot_serve_tls(tls: TlsFiles) -> None:
    """Why TLS comes from a front here. Tansu 510f3e2's command line puts `--cert` and `--key`
    in one exclusive group, so it refuses both together and builds no TLS without either; and
    its broker builds a TLS acceptor it never uses (broker.rs `let _acceptor`, parked)."""
    with pytest.raises(PartExitedError, match="'--cert <CERT>' cannot be used with '--key <KEY>'"):
        Tansu(None, "--cert", str(tls.server_certificate), "--key", str(tls.server_key)).start()
    with Tansu(None, "--cert", str(tls.server_certificate)) as broker:
        problem = await kafka.connection_problem(broker.bootstrap_servers, ssl_security(tls))
        assert problem == "no answer to the TLS handshake in 5 s: does the broker speak TLS?"
        assert await round_trip(broker.bootstrap_servers, kafka.PLAINTEXT) == (b"order-1", b"paid")


async def test_ssl_clients_of_the_kit_round_trip_a_record(tls: TlsFiles) -> None:
    with fronted_tansu(tls) as front:
        assert await round_trip(front.bootstrap_servers, ssl_security(tls)) == (
            b"order-1",
            b"paid",
        )


async def test_without_tls_or_trusting_another_ca_a_client_is_refused_and_told_why(
    tls: TlsFiles, tmp_path: Path
) -> None:
    other = make_tls_files(tmp_path, prefix="other-")
    with fronted_tansu(tls) as front:
        plaintext = await refusal(front.bootstrap_servers, kafka.PLAINTEXT)
        untrusted = await refusal(front.bootstrap_servers, ssl_security(other))

    assert plaintext.startswith(f"broker {front.bootstrap_servers} unreachable: ")
    assert "KAFKA_SECURITY_PROTOCOL=PLAINTEXT: does it require TLS or SASL" in plaintext
    # Both CAs are named alike: OpenSSL finds the other one and its signature fails.
    assert "the broker's TLS certificate is refused (certificate signature failure)" in untrusted
    assert "KAFKA_SSL_CAFILE must name the CA that signed it" in untrusted


async def test_the_certificate_must_name_the_address_unless_the_check_is_off(
    tmp_path: Path,
) -> None:
    elsewhere = make_tls_files(tmp_path, server_names=["broker.example"])
    with fronted_tansu(elsewhere) as front:
        mismatch = await refusal(front.bootstrap_servers, ssl_security(elsewhere))
        unchecked = ssl_security(elsewhere, KAFKA_SSL_CHECK_HOSTNAME="false")
        assert await round_trip(front.bootstrap_servers, unchecked) == (b"order-1", b"paid")
    assert "(IP address mismatch, certificate is not valid for '127.0.0.1'.)" in mismatch
    assert "it must name the address in KAFKA_BOOTSTRAP_SERVERS" in mismatch


async def test_mutual_tls_admits_the_client_certificate_and_refuses_its_absence(
    tls: TlsFiles,
) -> None:
    with fronted_tansu(tls, client_ca=tls.ca) as front:
        identified = ssl_security(
            tls,
            KAFKA_SSL_CERTFILE=str(tls.client_certificate),
            KAFKA_SSL_KEYFILE=str(tls.client_key),
        )
        assert await round_trip(front.bootstrap_servers, identified) == (b"order-1", b"paid")
        anonymous = await refusal(front.bootstrap_servers, ssl_security(tls))
    assert "KAFKA_SECURITY_PROTOCOL=SSL: does it speak TLS, or want a client certificate" in (
        anonymous
    )


@pytest.fixture(scope="module")
def authenticating(tls: TlsFiles) -> Iterator[tuple[TansuBroker, TlsFront]]:
    """Tansu with `--authentication`, plaintext on its own port and TLS through a front."""
    front_port = free_port()
    with (
        Tansu(front_port, "--authentication") as broker,
        TlsFront(front_port, broker.port, tls) as front,
    ):
        yield broker, front


async def test_an_unauthenticated_client_is_refused_and_told_why(
    authenticating: tuple[TansuBroker, TlsFront],
) -> None:
    broker, _ = authenticating
    refused = await refusal(broker.bootstrap_servers, kafka.PLAINTEXT)
    assert "KAFKA_SECURITY_PROTOCOL=PLAINTEXT: does it require TLS or SASL" in refused


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_a_scram_login_the_broker_refuses_is_a_clear_error(
    authenticating: tuple[TansuBroker, TlsFront], tls: TlsFiles, mechanism: str
) -> None:
    """Over TLS, the whole SCRAM exchange, refused by the broker (Tansu knows no user)."""
    _, front = authenticating
    refused = await refusal(front.bootstrap_servers, sasl_security("SASL_SSL", mechanism, tls))
    assert refused == (
        f"broker {front.bootstrap_servers} unreachable: the broker refused SASL authentication "
        f"as 'order_service' ({mechanism}): check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
    )


async def test_a_mechanism_the_broker_does_not_offer_is_named(
    authenticating: tuple[TansuBroker, TlsFront], tls: TlsFiles
) -> None:
    """Tansu drops the connection on PLAIN (its SASL server has no PLAIN: NoSharedMechanism)."""
    _, front = authenticating
    refused = await refusal(front.bootstrap_servers, sasl_security("SASL_SSL", "PLAIN", tls))
    assert "KAFKA_SECURITY_PROTOCOL=SASL_SSL: does it offer KAFKA_SASL_MECHANISM=PLAIN?" in refused


async def test_the_cli_reaches_a_secured_broker_with_the_services_variables(
    authenticating: tuple[TansuBroker, TlsFront], tls: TlsFiles
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    secured = {
        "CHOREO_TOPIC_PREFIX": prefix,
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CAFILE": str(tls.ca),
    }
    with fronted_tansu(tls) as front:
        await kafka.ensure_topics(
            front.bootstrap_servers, [f"{prefix}order.create"], security=ssl_security(tls)
        )
        env = {**secured, "KAFKA_BOOTSTRAP_SERVERS": front.bootstrap_servers}
        listed = await asyncio.to_thread(runner.invoke, app, ["topics", "--json"], env=env)
        plaintext = {**env, "KAFKA_SECURITY_PROTOCOL": None, "KAFKA_SSL_CAFILE": None}
        refused_tls = await asyncio.to_thread(runner.invoke, app, ["topics"], env=plaintext)
    _, authenticating_front = authenticating
    scram = {
        **secured,
        "KAFKA_BOOTSTRAP_SERVERS": authenticating_front.bootstrap_servers,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "KAFKA_SASL_USERNAME": "operator",
        "KAFKA_SASL_PASSWORD": "s3cret",
    }
    refused_login = await asyncio.to_thread(runner.invoke, app, ["topics"], env=scram)
    incomplete = {**scram, "KAFKA_SASL_PASSWORD": None}
    unset = await asyncio.to_thread(runner.invoke, app, ["topics"], env=incomplete)

    assert listed.exit_code == 0, listed.output
    assert f"{prefix}order.create" in listed.stdout
    assert refused_tls.exit_code == 1
    assert "KAFKA_SECURITY_PROTOCOL=PLAINTEXT: does it require TLS or SASL" in refused_tls.stderr
    assert refused_login.exit_code == 1
    assert refused_login.stderr.strip() == (
        f"error: broker {authenticating_front.bootstrap_servers} unreachable: the broker "
        "refused SASL authentication as 'operator' (SCRAM-SHA-256): check KAFKA_SASL_USERNAME "
        "and KAFKA_SASL_PASSWORD"
    )
    assert unset.exit_code == 1
    assert unset.stderr.strip() == (
        "error: cannot reach the broker securely: KAFKA_SECURITY_PROTOCOL=SASL_SSL needs "
        "KAFKA_SASL_PASSWORD"
    )
    assert "s3cret" not in refused_login.output + unset.output
