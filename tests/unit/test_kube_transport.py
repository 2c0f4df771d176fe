"""The operator's calls on aiohttp (kube/transport.py) reach the API server the way the client's
own transport would: TLS from the configuration's CA (and refused without it), the configured
proxy unless no_proxy names the server, the client's bearer token, and answers counted."""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from kubernetes import client

from localenv.loopback import serving
from localenv.pki import ServingCertificate, write_serving_certificate
from simacan_token_operator.kube.api import KubeError
from simacan_token_operator.kube.client import Kube
from simacan_token_operator.kube.metered import MeteredApiClient


def _answer(handler: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class _Secrets(http.server.BaseHTTPRequestHandler):
    """Answers every GET with one Secret; remembers each request line and Authorization header."""

    seen: ClassVar[list[tuple[str, str]]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization", "")))
        _answer(self, b'{"kind": "Secret", "metadata": {"name": "fleet-api"}}')

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ForwardProxy(http.server.BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy: the request line carries the absolute URL it fetches."""

    forwarded: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.forwarded.append(self.path)
        request = urllib.request.Request(self.path, headers={"Authorization": self.headers["Authorization"]})
        with urllib.request.urlopen(request, timeout=5) as answer:
            _answer(self, answer.read())

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def _forget() -> None:
    _Secrets.seen.clear()
    _ForwardProxy.forwarded.clear()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> ServingCertificate:
    return write_serving_certificate(
        tmp_path_factory.mktemp("pki"),
        ca_name="transport-test-ca",
        common_name="127.0.0.1",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        validity=datetime.timedelta(hours=1),
    )


@pytest.fixture
def tls_api(certificate: ServingCertificate) -> Iterator[str]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert_file, certificate.key_file)
    with serving(_Secrets, tls=context) as url:
        yield url


def _configuration(url: str, **settings: Any) -> client.Configuration:
    configuration = client.Configuration()
    configuration.host = url
    configuration.api_key = {"BearerToken": "unit-test"}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    for name, value in settings.items():
        setattr(configuration, name, value)
    return configuration


def _read(configuration: client.Configuration, counted: list[tuple[str, str, str]] | None = None) -> Any:
    api_client = (
        client.ApiClient(configuration)
        if counted is None
        else MeteredApiClient(configuration, lambda *labels: counted.append(labels))
    )

    async def read() -> Any:
        kube = Kube(api_client)
        try:
            return await kube.read_secret("team-a", "fleet-api")
        finally:
            await kube.aclose()

    return asyncio.run(read())


def test_tls_is_verified_against_the_configured_ca(tls_api: str, certificate: ServingCertificate) -> None:
    counted: list[tuple[str, str, str]] = []
    secret = _read(_configuration(tls_api, ssl_ca_cert=str(certificate.ca_file)), counted)
    assert secret["metadata"]["name"] == "fleet-api"
    assert _Secrets.seen == [("/api/v1/namespaces/team-a/secrets/fleet-api", "Bearer unit-test")]
    assert counted == [("get", "secrets", "200")]


def test_a_server_the_configured_ca_did_not_sign_is_refused(tls_api: str, tmp_path: Path) -> None:
    other = write_serving_certificate(
        tmp_path,
        ca_name="another-ca",
        common_name="127.0.0.1",
        dns_names=[],
        ip_addresses=["127.0.0.1"],
        validity=datetime.timedelta(hours=1),
    )
    counted: list[tuple[str, str, str]] = []
    with pytest.raises(KubeError) as refused:
        _read(_configuration(tls_api, ssl_ca_cert=str(other.ca_file)), counted)
    assert refused.value.status == 0 and "Certificate" in str(refused.value)
    assert _Secrets.seen == [] and counted == [("get", "secrets", "error")]


def test_verify_ssl_off_accepts_any_certificate(tls_api: str) -> None:
    """What `insecure-skip-tls-verify: true` in a kubeconfig asks for."""
    assert _read(_configuration(tls_api, verify_ssl=False)) is not None


def test_requests_go_through_the_configured_proxy_unless_no_proxy_names_the_server() -> None:
    with serving(_Secrets) as api, serving(_ForwardProxy) as proxy:
        assert _read(_configuration(api, proxy=proxy)) is not None
        assert _ForwardProxy.forwarded == [f"{api}/api/v1/namespaces/team-a/secrets/fleet-api"]
        assert _read(_configuration(api, proxy=proxy, no_proxy="127.0.0.1")) is not None
        assert len(_ForwardProxy.forwarded) == 1 and len(_Secrets.seen) == 2


def test_a_kube_serves_one_event_loop_after_another() -> None:
    """Each asyncio.run is a new loop; a session is bound to the loop it was made in."""
    with serving(_Secrets) as api:
        kube = Kube(client.ApiClient(_configuration(api)))
        for _ in range(2):
            assert asyncio.run(kube.read_secret("team-a", "fleet-api")) is not None
        asyncio.run(kube.aclose())
        assert len(_Secrets.seen) == 2
