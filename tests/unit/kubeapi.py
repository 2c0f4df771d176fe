"""A Kubernetes API emulator on loopback and clients for it, for unit tests of the Kube seam."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from kubernetes import client

from simacan_token_operator.kube.watch import MetadataWatch
from tests.support.emulator import ApiServerEmulator, serving


@contextmanager
def emulated_api() -> Iterator[str]:
    """Yields the emulator's base URL (http://127.0.0.1:PORT)."""
    emulator = ApiServerEmulator()
    with serving(emulator) as url:
        yield url
    assert not emulator.internal_errors, emulator.internal_errors


async def stop_watch(watch: MetadataWatch, silence_over: threading.Event) -> None:
    """Stop `watch`, then end the scripted server's silent streams (`silence_over`). A watch request
    sent just before stop() is not yet known to it, so stop() cannot cut it short (kube/watch.py
    registers the response only once its headers are in): it would hold the stop for the whole
    silence, seconds, whenever a test ends at that moment."""
    stopping = asyncio.ensure_future(watch.stop())
    await asyncio.sleep(0)  # stop() has run up to its first wait: the flag is set, known streams cut
    silence_over.set()
    await stopping


def api_client_for(url: str) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = url
    configuration.api_key = {"BearerToken": "unit-test"}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return client.ApiClient(configuration)
