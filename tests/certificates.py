"""Throwaway TLS certificates for tests: a CA, a server certificate it signs and a client
certificate it signs (mutual TLS), written as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_certificate: Path
    server_key: Path
    client_certificate: Path
    client_key: Path


def make_tls_files(
    directory: Path, server_names: Sequence[str] = ("127.0.0.1", "localhost"), prefix: str = ""
) -> TlsFiles:
    """A new CA and the certificates it signs: the server's for `server_names` (IP addresses
    or DNS names), the client's for the principal `choreo-test-client`."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "choreo test CA")])
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for name in server_names:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    files = {
        "ca": _write(directory / f"{prefix}ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    }
    for role, usage, extensions in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH, [x509.SubjectAlternativeName(names)]),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH, []),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"choreo-test-{role}")])
        builder = _builder(subject, ca_name, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        certificate = builder.sign(ca_key, hashes.SHA256())
        files[f"{role}_certificate"] = _write(
            directory / f"{prefix}{role}.pem", certificate.public_bytes(serialization.Encoding.PEM)
        )
        files[f"{role}_key"] = _write(
            directory / f"{prefix}{role}-key.pem",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    return TlsFiles(**files)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
