"""A small Kubernetes REST client on httpx for the comparison benchmark's reader, loader and cron loop.

Plain JSON over one keep-alive connection, with no generated model classes: the reader must cost the API
server and this process as little as possible, so as not to distort the contest it watches.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.child import BenchmarkError

APPLY_PATCH = "application/apply-patch+yaml"  # JSON is valid YAML
FIELD_MANAGER = "compare-benchmark"


@dataclass(frozen=True)
class KubeTarget:
    """Where the API server is and how to authenticate (a bearer token; never printed)."""

    server: str
    ca_file: Path
    token: str

    def client(self, timeout: float = 30.0) -> KubeClient:
        return KubeClient(self, timeout)


class KubeClient:
    """GET, LIST, WATCH, create, replace and server-side apply; an unexpected status raises
    BenchmarkError."""

    def __init__(self, target: KubeTarget, timeout: float) -> None:
        self._http = httpx.Client(
            base_url=target.server,
            verify=str(target.ca_file),
            headers={"Authorization": f"Bearer {target.token}"},
            timeout=timeout,
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
        )
        self._watch_socket: socket.socket | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        response = self._http.get(path, params=params)
        _check(response, "GET", path)
        body: dict[str, Any] = response.json()
        return body

    def create(self, path: str, body: Mapping[str, Any]) -> None:
        response = self._http.post(path, json=dict(body))
        _check(response, "POST", path)

    def replace(self, path: str, body: Mapping[str, Any]) -> bool:
        """PUT without a resourceVersion (an unconditional update); False when the object does not exist."""
        response = self._http.put(path, json=dict(body))
        if response.status_code == 404:
            return False
        _check(response, "PUT", path)
        return True

    def apply(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply (`kubectl apply --server-side --force-conflicts`): create or update."""
        response = self._http.patch(
            path,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content=json.dumps(body),
            headers={"Content-Type": APPLY_PATCH},
        )
        _check(response, "PATCH", path)
        applied: dict[str, Any] = response.json()
        return applied

    def watch(self, path: str, resource_version: str, timeout_seconds: int) -> Iterator[dict[str, Any]]:
        """Yield watch events until the server ends the watch (after `timeout_seconds`)."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        timeout = httpx.Timeout(10.0, read=timeout_seconds + 30.0)
        with self._http.stream("GET", path, params=params, timeout=timeout) as response:
            _check(response, "WATCH", path)
            stream = response.extensions.get("network_stream")
            self._watch_socket = stream.get_extra_info("socket") if stream is not None else None
            for line in response.iter_lines():
                if line:
                    event: dict[str, Any] = json.loads(line)
                    yield event

    def interrupt_watch(self) -> None:
        """Wake a thread blocked reading a watch (closing the client from another thread does not)."""
        sock = self._watch_socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _check(response: httpx.Response, verb: str, path: str) -> None:
    if response.status_code < 300:
        return
    response.read()
    # Status objects name the object and the reason; they never carry Secret data.
    raise BenchmarkError(f"{verb} {path}: HTTP {response.status_code}: {response.text[:500]}")
