"""Signed events: a record of a service's topic counts only when that service's key signed it.

`ce_source` says which service wrote a record, but anyone who can write to the topic can write
it too. Broker ACLs stop that where the broker enforces them (docs/architecture.md, trust
model); signatures stop it on any broker, and in the records themselves: each publishing
service signs every record it writes with its own Ed25519 key (RFC 8032), in the transaction
that writes the outbox row; every consumer checks the signature against the public keys of the
service that owns the record's topic (`choreo.events.OWNER_OF_TOPIC`) and rejects (dead-letters,
with a warning) a record that is unsigned or signed by any other key.

The signature covers the logical topic, the CloudEvents attributes a handler reads (`ce_id`,
`ce_type`, `ce_source`, `ce_subject`, `ce_time`) and the Avro value, so a signed record can be
neither altered nor given a new id (a replayed copy with its own id is a duplicate the inbox
drops). It travels in the `ce_signature` header (a CloudEvents extension attribute in binary
mode): the 64-byte Ed25519 signature, base64url without padding.

Keys: each publishing service's private key (PKCS#8 PEM) in `<SERVICE>_EVENT_SIGNING_KEY`;
every service's public keys in `CHOREO_EVENT_KEYS`, a JSON object `{"order": ["<key>", ...]}`
whose keys are the raw 32 bytes base64url-encoded, as a JWK's `x` (RFC 8037 §2). More than one
key per service lets a key be rotated: publish the new public key first, then switch the
private key, then drop the old one.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from choreo.errors import ChoreoError, RejectedEventError
from choreo.events import OWNER_OF_TOPIC

SIGNATURE_HEADER = "ce_signature"
# The publishing services: each owns at least one event topic.
PUBLISHERS: tuple[str, ...] = tuple(dict.fromkeys(OWNER_OF_TOPIC.values()))
_DOMAIN = b"choreo event signature v1"
_SIGNED_ATTRIBUTES = ("ce_id", "ce_type", "ce_source", "ce_subject", "ce_time")


class EventKeyError(ChoreoError):
    """An event key that cannot be used: not Ed25519, not PEM, not base64url, not 32 bytes."""


def signed_message(topic: str, attributes: Mapping[str, str], value: bytes) -> bytes:
    """The bytes a signature covers: a fixed prefix, then the logical `topic`, the signed
    CloudEvents attributes (absent ones as empty text) and `value`, each length-prefixed
    (4 bytes, big-endian) so that no two records share a message."""
    parts = [_DOMAIN, topic.encode()]
    parts += [attributes.get(name, "").encode() for name in _SIGNED_ATTRIBUTES]
    parts.append(value)
    return b"".join(struct.pack(">I", len(part)) + part for part in parts)


class EventSigner:
    """Signs one service's records with its private key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> EventSigner:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: str) -> EventSigner:
        """Raises EventKeyError unless `pem` is an unencrypted Ed25519 private key (PKCS#8).

        A PEM given on one line with its line breaks written as `\\n` (as an env file or a
        container's environment often carries it) is read as the PEM it spells."""
        if "\n" not in pem.strip() and "\\n" in pem:
            pem = pem.replace("\\n", "\n")
        try:
            key = serialization.load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError) as error:
            raise EventKeyError(f"not a PEM private key without a password: {error}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise EventKeyError(f"the event signing key must be Ed25519, not {type(key).__name__}")
        return cls(key)

    def to_pem(self) -> str:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    @property
    def public_key(self) -> str:
        """The public key as CHOREO_EVENT_KEYS lists it (raw, base64url, RFC 8037 §2)."""
        raw = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return _b64encode(raw)

    def sign(self, topic: str, attributes: Mapping[str, str], value: bytes) -> str:
        """The `ce_signature` header value of a record of logical `topic`."""
        return _b64encode(self._key.sign(signed_message(topic, attributes, value)))


@dataclass(frozen=True)
class EventKeys:
    """The public keys each publishing service signs with (CHOREO_EVENT_KEYS)."""

    keys: Mapping[str, tuple[Ed25519PublicKey, ...]]
    text: Mapping[str, tuple[str, ...]]

    @classmethod
    def of(cls, keys: Mapping[str, Iterable[str]]) -> EventKeys:
        """From {service: [public key, ...]}; raises EventKeyError for an unusable key."""
        text = {service: tuple(listed) for service, listed in keys.items()}
        parsed = {
            service: tuple(_public_key(k) for k in listed) for service, listed in text.items()
        }
        return cls(parsed, text)

    @classmethod
    def from_json(cls, document: str) -> EventKeys:
        """From CHOREO_EVENT_KEYS; raises EventKeyError naming what is wrong."""
        try:
            keys = json.loads(document)
        except json.JSONDecodeError as error:
            raise EventKeyError(f"CHOREO_EVENT_KEYS is not JSON: {error}") from None
        if not isinstance(keys, dict) or not all(
            isinstance(listed, list) and all(isinstance(k, str) for k in listed)
            for listed in keys.values()
        ):
            raise EventKeyError(
                'CHOREO_EVENT_KEYS must be a JSON object {"<service>": ["<public key>", ...]}'
            )
        unknown = sorted(set(keys) - set(PUBLISHERS))
        if unknown:
            raise EventKeyError(
                f"CHOREO_EVENT_KEYS names {', '.join(unknown)}: only "
                f"{', '.join(PUBLISHERS)} publish events"
            )
        return cls.of(keys)

    def to_json(self) -> str:
        return json.dumps({service: list(keys) for service, keys in self.text.items()})

    def lists(self, service: str, public_key: str) -> bool:
        return public_key in self.text.get(service, ())

    def verify(
        self, topic: str, headers: Sequence[tuple[str, bytes | None]], value: bytes | None
    ) -> None:
        """Raises RejectedEventError unless the owner of logical `topic` signed the record.

        `headers` as aiokafka gives them, already read as an event (choreo.events.decode_record
        refuses a repeated, null or non-UTF-8 CloudEvents header).
        """
        owner = OWNER_OF_TOPIC[topic]
        signatures = [raw for name, raw in headers if name == SIGNATURE_HEADER]
        if not signatures:
            raise RejectedEventError(f"the record is not signed; {topic} takes {owner}'s only")
        if len(signatures) > 1 or signatures[0] is None:
            raise RejectedEventError(f"the record must carry one {SIGNATURE_HEADER} header")
        try:
            signature = _b64decode(signatures[0].decode("ascii"))
        except (UnicodeDecodeError, EventKeyError):
            raise RejectedEventError(f"{SIGNATURE_HEADER} is not base64url") from None
        attributes = {
            name: raw.decode() for name, raw in headers if name in _SIGNED_ATTRIBUTES and raw
        }
        message = signed_message(topic, attributes, value or b"")
        for key in self.keys.get(owner, ()):
            try:
                key.verify(signature, message)
            except InvalidSignature:
                continue
            return
        raise RejectedEventError(f"the record is not signed by the {owner} service's key")


def generate_keys(services: Iterable[str] = PUBLISHERS) -> tuple[dict[str, EventSigner], EventKeys]:
    """A new private key for each of `services`, and the public keys of them all."""
    signers = {service: EventSigner.generate() for service in services}
    return signers, EventKeys.of({s: [signer.public_key] for s, signer in signers.items()})


def keys_in(directory: Path) -> tuple[dict[str, EventSigner], EventKeys]:
    """The publishers' keys kept in `directory` (`<service>.pem`, mode 600), each made on
    first use: how `choreo up` gives a dev stack signed events that survive its restarts."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    signers: dict[str, EventSigner] = {}
    for service in PUBLISHERS:
        path = directory / f"{service}.pem"
        try:
            signers[service] = EventSigner.from_pem(path.read_text())
        except FileNotFoundError:
            signers[service] = EventSigner.generate()
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(signers[service].to_pem())
    return signers, EventKeys.of({s: [signer.public_key] for s, signer in signers.items()})


def _public_key(text: str) -> Ed25519PublicKey:
    raw = _b64decode(text)
    if len(raw) != 32:
        raise EventKeyError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise EventKeyError("not base64url text") from None
