"""A Kubernetes API emulator on loopback and clients for it, for unit tests of the Kube seam."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kubernetes import client

from tests.support.emulator import ApiServerEmulator, serving


@contextmanager
def emulated_api() -> Iterator[str]:
    """Yields the emulator's base URL (http://127.0.0.1:PORT)."""
    emulator = ApiServerEmulator()
    with serving(emulator) as url:
        yield url
    assert not emulator.internal_errors, emulator.internal_errors


def api_client_for(url: str) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = url
    configuration.api_key = {"BearerToken": "unit-test"}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return client.ApiClient(configuration)
