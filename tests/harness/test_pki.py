"""The throwaway CA must make a certificate real TLS clients accept, for exactly the names asked for."""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localenv.pki import ServingCertificate, write_private_file, write_serving_certificate

COMMON_NAME = "test-server"
DNS_NAMES = ("localhost", "kubernetes.default.svc")
IP_ADDRESSES = ("127.0.0.1", "10.0.0.1")
TIMEOUT_SECONDS = 5.0


def _write(directory: Path) -> ServingCertificate:
    return write_serving_certificate(
        directory,
        ca_name="test CA",
        common_name=COMMON_NAME,
        dns_names=DNS_NAMES,
        ip_addresses=IP_ADDRESSES,
        validity=datetime.timedelta(minutes=10),
    )


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> ServingCertificate:
    return _write(tmp_path_factory.mktemp("pki"))


def _accept_one_handshake(listener: socket.socket, context: ssl.SSLContext) -> None:
    # A client that rejects the certificate aborts the handshake; that is its verdict, not a server fault.
    with contextlib.suppress(OSError):
        connection, _ = listener.accept()
        with connection, context.wrap_socket(connection, server_side=True):
            pass


@contextlib.contextmanager
def _serving_once(certificate: ServingCertificate) -> Iterator[int]:
    """Serve one TLS handshake on loopback with the certificate; yields the port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate.cert_file, certificate.key_file)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT_SECONDS)
        server = threading.Thread(target=_accept_one_handshake, args=(listener, context))
        server.start()
        try:
            yield listener.getsockname()[1]
        finally:
            server.join(TIMEOUT_SECONDS)


def _handshake(port: int, ca_file: Path, server_hostname: str) -> dict[str, Any]:
    client = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_SECONDS) as raw,
        client.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        peer = tls.getpeercert()
    assert peer is not None
    return dict(peer)


@pytest.mark.parametrize("server_hostname", DNS_NAMES + IP_ADDRESSES)
def test_ca_verifies_certificate_for_each_requested_name(
    certificate: ServingCertificate, server_hostname: str
) -> None:
    with _serving_once(certificate) as port:
        peer = _handshake(port, certificate.ca_file, server_hostname)
    assert peer["subject"] == ((("commonName", COMMON_NAME),),)


def test_certificate_is_rejected_for_a_name_not_requested(certificate: ServingCertificate) -> None:
    with _serving_once(certificate) as port, pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(port, certificate.ca_file, "example.com")


def test_every_call_makes_its_own_ca(certificate: ServingCertificate, tmp_path: Path) -> None:
    other = _write(tmp_path)
    with _serving_once(certificate) as port, pytest.raises(ssl.SSLCertVerificationError, match="issuer"):
        _handshake(port, other.ca_file, "localhost")


def test_private_key_is_readable_by_owner_only(certificate: ServingCertificate) -> None:
    assert stat.S_IMODE(certificate.key_file.stat().st_mode) == 0o600


def test_private_file_is_tightened_when_it_already_exists(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("old")
    path.chmod(0o644)
    write_private_file(path, "new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "new"
