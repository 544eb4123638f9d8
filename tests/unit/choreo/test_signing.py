"""Signed events (choreo.signing): only the owner's key makes a record count."""

from __future__ import annotations

import dataclasses
import json

import pytest

from choreo.errors import RejectedEventError
from choreo.events import Event, headers_of
from choreo.records import PaymentSucceeded, Record
from choreo.service import ConfigurationError, _event_trust
from choreo.settings import ServiceSettings
from choreo.signing import SIGNATURE_HEADER, EventKeyError, EventKeys, EventSigner, generate_keys
from choreo.testing import records as make

VALUE = b"\xc3\x01 avro bytes"
SIGNERS, KEYS = generate_keys()


def record(
    event: Event[Record], value: bytes = VALUE, signer: EventSigner | None = SIGNERS["payment"]
) -> list[tuple[str, bytes | None]]:
    text = headers_of(event)
    if signer is not None:
        text[SIGNATURE_HEADER] = signer.sign(event.topic, text, value)
    return [(name, v.encode()) for name, v in text.items()]


def payment_succeeded() -> Event[PaymentSucceeded]:
    succeeded = make.payment_succeeded(order_id="3f1c5e0a-8d7b-4b8e-9a51-0c2d1e6f7a89")
    return dataclasses.replace(succeeded, source="/payment_service")


def test_the_owners_signature_verifies() -> None:
    KEYS.verify("payment.event", record(payment_succeeded()), VALUE)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (record(payment_succeeded(), signer=None), "not signed"),
        (record(payment_succeeded(), signer=SIGNERS["inventory"]), "payment service's key"),
        (record(payment_succeeded(), signer=EventSigner.generate()), "payment service's key"),
        ([*record(payment_succeeded()), (SIGNATURE_HEADER, b"AAAA")], "one ce_signature"),
        ([*record(payment_succeeded(), signer=None), (SIGNATURE_HEADER, None)], "one ce_signature"),
        ([*record(payment_succeeded(), signer=None), (SIGNATURE_HEADER, b"\xff")], "base64url"),
    ],
    ids=["unsigned", "another-owner", "unknown-key", "two", "null", "not-text"],
)
def test_a_record_its_owner_did_not_sign_is_rejected(
    headers: list[tuple[str, bytes | None]], reason: str
) -> None:
    with pytest.raises(RejectedEventError, match=reason):
        KEYS.verify("payment.event", headers, VALUE)


@pytest.mark.parametrize("attribute", ["ce_id", "ce_type", "ce_source", "ce_subject", "ce_time"])
def test_a_changed_attribute_breaks_the_signature(attribute: str) -> None:
    headers = [
        (name, b"changed" if name == attribute else raw)
        for name, raw in record(payment_succeeded())
    ]
    with pytest.raises(RejectedEventError):
        KEYS.verify("payment.event", headers, VALUE)


def test_a_changed_value_or_topic_breaks_the_signature() -> None:
    headers = record(payment_succeeded())
    with pytest.raises(RejectedEventError):
        KEYS.verify("payment.event", headers, VALUE + b"\x00")
    with pytest.raises(RejectedEventError):
        # The same bytes claimed for another topic of the same owner's keys.
        EventKeys.of({"order": KEYS.text["payment"]}).verify("order.event", headers, VALUE)


def test_a_rotated_key_verifies_beside_the_old_one() -> None:
    new = EventSigner.generate()
    keys = EventKeys.from_json(
        json.dumps({"payment": [SIGNERS["payment"].public_key, new.public_key]})
    )
    keys.verify("payment.event", record(payment_succeeded(), signer=new), VALUE)
    keys.verify("payment.event", record(payment_succeeded()), VALUE)


def test_a_private_key_survives_pem() -> None:
    again = EventSigner.from_pem(SIGNERS["order"].to_pem())
    assert again.public_key == SIGNERS["order"].public_key


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ("not json", "not JSON"),
        ('["a"]', "JSON object"),
        ('{"payment": "one"}', "JSON object"),
        ('{"notification": []}', "only order, inventory, payment, user publish"),
        ('{"payment": ["AAAA"]}', "32 bytes, not 3"),
        ('{"payment": ["***"]}', "32 bytes"),
    ],
)
def test_unusable_public_keys_are_named(document: str, reason: str) -> None:
    with pytest.raises(EventKeyError, match=reason):
        EventKeys.from_json(document)


def test_an_rsa_or_garbled_private_key_is_refused() -> None:
    with pytest.raises(EventKeyError, match="PEM"):
        EventSigner.from_pem("-----BEGIN PRIVATE KEY-----\nxyz\n-----END PRIVATE KEY-----\n")


class _Payment(ServiceSettings):
    service = "payment"
    database_name = "payments"


def settings(**values: object) -> ServiceSettings:
    return _Payment(database_url="postgresql://db/payments", **values)  # type: ignore[arg-type]


def test_prod_refuses_to_run_unsigned() -> None:
    with pytest.raises(ConfigurationError, match="CHOREO_EVENT_KEYS and PAYMENT_EVENT_SIGNING"):
        _event_trust(settings(CHOREO_ENV="prod"))


def test_a_publisher_whose_key_is_not_listed_refuses_to_start() -> None:
    other = EventSigner.generate()
    with pytest.raises(ConfigurationError, match="does not list the public key"):
        _event_trust(settings(CHOREO_EVENT_KEYS=KEYS.to_json(), event_signing_key=other.to_pem()))
    with pytest.raises(ConfigurationError, match="EVENT_SIGNING_KEY is not"):
        _event_trust(settings(CHOREO_EVENT_KEYS=KEYS.to_json()))


def test_a_listed_key_signs_and_verifies() -> None:
    signer, keys = _event_trust(
        settings(
            CHOREO_ENV="prod",
            CHOREO_EVENT_KEYS=KEYS.to_json(),
            event_signing_key=SIGNERS["payment"].to_pem(),
        )
    )
    assert signer is not None
    assert keys is not None
    assert signer.public_key == SIGNERS["payment"].public_key


def test_a_pem_on_one_line_with_escaped_line_breaks_is_read() -> None:
    one_line = SIGNERS["order"].to_pem().strip().replace("\n", "\\n")
    assert EventSigner.from_pem(one_line).public_key == SIGNERS["order"].public_key


def test_an_unreadable_signing_key_names_its_variable() -> None:
    with pytest.raises(ConfigurationError, match=r"^PAYMENT_EVENT_SIGNING_KEY: not a PEM"):
        _event_trust(settings(event_signing_key="not a key"))
