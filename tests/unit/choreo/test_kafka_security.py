"""The broker's TLS and SASL settings: which combinations start, what each refusal says, and the
keyword arguments every aiokafka client gets."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from choreo import kafka
from choreo.cli.options import kafka_security
from choreo.cli.output import CliError
from choreo.kafka import KafkaSecurity, KafkaSecurityError
from choreo.service import Service
from choreo.settings import ServiceSettings
from tests.certificates import TlsFiles, make_tls_files

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def sasl_ssl(tls: TlsFiles, **more: str) -> dict[str, str]:
    return {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "order_service",
        "KAFKA_SASL_PASSWORD": PASSWORD,
        "KAFKA_SSL_CAFILE": str(tls.ca),
        **more,
    }


def test_without_settings_clients_speak_plaintext() -> None:
    assert KafkaSecurity.from_environment({}) == kafka.PLAINTEXT
    assert kafka.PLAINTEXT.client_options() == {"security_protocol": "PLAINTEXT"}
    assert not kafka.PLAINTEXT.authenticates


def test_sasl_ssl_gives_aiokafka_the_mechanism_the_principal_and_a_verifying_tls_context(
    tls: TlsFiles,
) -> None:
    options = KafkaSecurity.from_environment(sasl_ssl(tls)).client_options()

    context = options.pop("ssl_context")
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "order_service",
        "sasl_plain_password": PASSWORD,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert [ca["subject"] for ca in context.get_ca_certs()] == [
        ((("commonName", "choreo test CA"),),)
    ]


def test_ssl_alone_sends_no_credentials_and_the_hostname_check_can_be_turned_off(
    tls: TlsFiles,
) -> None:
    environment = {
        "KAFKA_SECURITY_PROTOCOL": "ssl",
        "KAFKA_SSL_CAFILE": str(tls.ca),
        "KAFKA_SSL_CHECK_HOSTNAME": "false",
    }
    security = KafkaSecurity.from_environment(environment)
    options = security.client_options()

    assert set(options) == {"security_protocol", "ssl_context"}
    assert options["security_protocol"] == "SSL"
    assert not options["ssl_context"].check_hostname
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert not security.authenticates


def test_a_client_certificate_makes_mutual_tls_and_names_the_principal(tls: TlsFiles) -> None:
    security = KafkaSecurity.from_environment(
        {
            "KAFKA_SECURITY_PROTOCOL": "SSL",
            "KAFKA_SSL_CAFILE": str(tls.ca),
            "KAFKA_SSL_CERTFILE": str(tls.client_certificate),
            "KAFKA_SSL_KEYFILE": str(tls.client_key),
        }
    )
    assert security.authenticates
    assert isinstance(security.client_options()["ssl_context"], ssl.SSLContext)


def test_sasl_plaintext_has_no_tls_context() -> None:
    environment = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "inventory_service",
        "KAFKA_SASL_PASSWORD": PASSWORD,
    }
    assert KafkaSecurity.from_environment(environment).client_options() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "inventory_service",
        "sasl_plain_password": PASSWORD,
    }


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (
            {"KAFKA_SECURITY_PROTOCOL": "TLS"},
            "KAFKA_SECURITY_PROTOCOL='TLS' is none of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_MECHANISM (PLAIN, SCRAM-SHA-256 or "
            "SCRAM-SHA-512), KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "GSSAPI",
                "KAFKA_SASL_USERNAME": "order_service",
                "KAFKA_SASL_PASSWORD": PASSWORD,
            },
            "KAFKA_SASL_MECHANISM='GSSAPI' is none of PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
        ),
        (
            {"KAFKA_SASL_USERNAME": "order_service", "KAFKA_SASL_PASSWORD": PASSWORD},
            "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT "
            "does not authenticate: set it to SASL_SSL, or unset them",
        ),
        (
            {"KAFKA_SSL_CAFILE": "{ca}"},
            "KAFKA_SSL_CAFILE set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use TLS: set it "
            "to SSL or SASL_SSL, or unset them",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
            "KAFKA_SSL_CAFILE=/nonexistent/ca.pem: no such file",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": "{key}"},
            "KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE, the certificate it signs",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CHECK_HOSTNAME": "maybe"},
            "KAFKA_SSL_CHECK_HOSTNAME='maybe' is not a boolean: write true or false",
        ),
    ],
)
def test_an_inconsistent_combination_is_refused_naming_what_to_set(
    tls: TlsFiles, environment: dict[str, str], message: str
) -> None:
    filled = {
        name: value.format(ca=tls.ca, key=tls.client_key) for name, value in environment.items()
    }
    with pytest.raises(KafkaSecurityError) as refused:
        KafkaSecurity.from_environment(filled)
    assert str(refused.value) == message
    assert PASSWORD not in str(refused.value)


def test_files_that_are_not_a_matching_certificate_and_key_are_refused_at_start(
    tls: TlsFiles, tmp_path: Path
) -> None:
    other = make_tls_files(tmp_path, prefix="other-")
    with pytest.raises(KafkaSecurityError, match="cannot load the TLS files"):
        KafkaSecurity(
            protocol="SSL", ssl_certfile=tls.client_certificate, ssl_keyfile=other.client_key
        )
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate")
    with pytest.raises(KafkaSecurityError, match="cannot load the TLS files"):
        KafkaSecurity(protocol="SSL", ssl_cafile=not_pem)


def test_the_password_never_shows_in_its_repr(tls: TlsFiles) -> None:
    security = KafkaSecurity.from_environment(sasl_ssl(tls))
    assert PASSWORD not in repr(security)
    assert PASSWORD not in str(security)


class OrderSettings(ServiceSettings):
    service = "order"
    database_name = "orders"


def test_a_service_reads_the_same_unprefixed_variables(
    tls: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in sasl_ssl(tls, KAFKA_SSL_CHECK_HOSTNAME="false").items():
        monkeypatch.setenv(name, value)
    settings = OrderSettings(_env_file=None, database_url="postgresql://db/orders")  # type: ignore[call-arg]

    assert settings.kafka_sasl_password is not None
    assert PASSWORD not in repr(settings)
    security = KafkaSecurity.from_settings(settings)
    assert security == KafkaSecurity.from_environment(sasl_ssl(tls, KAFKA_SSL_CHECK_HOSTNAME="0"))
    assert not security.ssl_context().check_hostname


def test_in_prod_a_service_the_broker_cannot_identify_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CHOREO_ENV", "prod")
    settings = OrderSettings(_env_file=None, database_url="postgresql://db/orders")  # type: ignore[call-arg]
    with caplog.at_level(logging.WARNING, logger="choreo.kafka"):
        KafkaSecurity.from_settings(settings)
    assert "KAFKA_SECURITY_PROTOCOL=PLAINTEXT in prod" in caplog.text


async def test_every_factory_passes_the_security_on(tls: TlsFiles) -> None:
    security = KafkaSecurity.from_environment(sasl_ssl(tls))
    producer = kafka.producer("127.0.0.1:9", security=security)
    consumer = kafka.consumer("127.0.0.1:9", group_id="g", security=security)
    for client in (producer.client, consumer._client):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "order_service"
        assert client._sasl_plain_password == PASSWORD
        assert isinstance(client._ssl_context, ssl.SSLContext)
    admin = AIOKafkaAdminClient(bootstrap_servers="127.0.0.1:9", **security.client_options())
    assert admin._client._security_protocol == "SASL_SSL"
    await producer.stop()
    await consumer.stop()
    await admin.close()


def test_the_cli_reads_the_environment_and_refuses_in_one_line(
    tls: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in sasl_ssl(tls).items():
        monkeypatch.setenv(name, value)
    assert kafka_security() == KafkaSecurity.from_environment(sasl_ssl(tls))

    monkeypatch.delenv("KAFKA_SASL_PASSWORD")
    with pytest.raises(CliError) as refused:
        kafka_security()
    assert str(refused.value) == (
        "cannot reach the broker securely: KAFKA_SECURITY_PROTOCOL=SASL_SSL needs "
        "KAFKA_SASL_PASSWORD"
    )


class ProbeSettings(ServiceSettings):
    service = "probe"


def test_a_service_refuses_to_start_with_an_inconsistent_combination(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    with pytest.raises(
        KafkaSecurityError, match="needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
    ):
        Service(ProbeSettings(_env_file=None))  # type: ignore[call-arg]
