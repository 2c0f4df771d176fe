"""Throwaway certificate authorities for TLS on loopback, and the RSA keys that sign tokens.

The fake Auth API and the e2e control plane each need a server certificate that a client verifies against
a CA file it is handed, never the system trust store. Every call makes a fresh CA and discards its key,
so nothing else can ever be signed by it. The fake Auth API signs its JWTs, and the control plane its
ServiceAccount tokens, with an RSA key from `new_rsa_key`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Backdated so that a process whose clock lags a little still accepts a certificate made a moment ago.
CLOCK_SKEW_ALLOWANCE = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class ServingCertificate:
    """PEM files: the CA a client trusts, and the certificate chain and key the server presents."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def write_serving_certificate(
    directory: Path,
    *,
    ca_name: str,
    common_name: str,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    validity: datetime.timedelta,
    file_stem: str = "server",
) -> ServingCertificate:
    """Write ``ca.crt``, ``<file_stem>.crt`` and ``<file_stem>.key`` (mode 0600) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - CLOCK_SKEW_ALLOWANCE, now + validity

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = _name(ca_name)
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        _builder(ca_subject, ca_subject, ca_key.public_key(), not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(address)) for address in ip_addresses]
    server_cert = (
        _builder(_name(common_name), ca_subject, server_key.public_key(), not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    files = ServingCertificate(
        ca_file=directory / "ca.crt",
        cert_file=directory / f"{file_stem}.crt",
        key_file=directory / f"{file_stem}.key",
    )
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    write_private_key(files.key_file, server_key)
    return files


@dataclass(frozen=True)
class KeyPairFiles:
    """An RSA key pair as PEM files: the private key (mode 0600) and its public half."""

    private_file: Path
    public_file: Path


def new_rsa_key() -> rsa.RSAPrivateKey:
    """2048 bits, RS256's usual size (tens of milliseconds to make: share one where tests allow)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_rsa_key_pair(directory: Path, stem: str) -> KeyPairFiles:
    """A new key pair in `directory`/`stem`.key and `stem`.pub."""
    key = new_rsa_key()
    files = KeyPairFiles(private_file=directory / f"{stem}.key", public_file=directory / f"{stem}.pub")
    write_private_key(files.private_file, key)
    files.public_file.write_bytes(public_key_pem(key))
    return files


def write_private_key(path: Path, key: PrivateKeyTypes) -> None:
    """Unencrypted PKCS#8 PEM, readable by the owner only."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private_file(path, pem)


def write_private_file(path: Path, content: str | bytes) -> None:
    """Write a secret with mode 0600 from the first byte, so it is never briefly world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)  # the mode given to os.open() is ignored for an existing file
        handle.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """A CA only signs certificates; an ECDSA server key only signs its handshakes."""
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
