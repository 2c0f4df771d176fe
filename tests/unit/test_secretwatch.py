"""The Secret watch against a scripted API server: 410 Gone and a silent stream both lead to a
fresh list and a resync of every worker, since events may have been missed."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest

from localenv.loopback import serving
from simacan_token_operator.kube.secretwatch import secret_watch
from simacan_token_operator.model.clusterspec import OWNER_LABEL
from tests.unit.kubeapi import api_client_for, stop_watch


class _Scripted(BaseHTTPRequestHandler):
    """Lists answer resourceVersion 10; each watch plays the next script: 'gone' (an ERROR 410
    event), 'silent' (headers, then nothing), 'event' (one MODIFIED Secret, then the end), 'owned'
    (one ADDED Secret labelled by a ClusterSimacanCredential)."""

    scripts: ClassVar[list[str]] = []
    lists: ClassVar[int] = 0
    watches: ClassVar[list[str]] = []
    silence_over: ClassVar[threading.Event] = threading.Event()
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if "watch=true" not in self.path:
            type(self).lists += 1
            self._send(
                {"kind": "PartialObjectMetadataList", "metadata": {"resourceVersion": "10"}, "items": []}
            )
            return
        script = self.scripts.pop(0) if self.scripts else "silent"
        self.watches.append(script)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if script == "gone":
            self._chunk({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}})
        elif script == "event":
            meta = {"name": "fleet-api", "namespace": "team-a", "resourceVersion": "11"}
            self._chunk({"type": "MODIFIED", "object": {"kind": "PartialObjectMetadata", "metadata": meta}})
        elif script == "owned":
            labels = {OWNER_LABEL: "u-1", "team": "a"}
            owned = {
                "name": "simacan-token",
                "namespace": "team-a",
                "resourceVersion": "12",
                "labels": labels,
            }
            self._chunk({"type": "ADDED", "object": {"kind": "PartialObjectMetadata", "metadata": owned}})
        else:
            self.silence_over.wait(3)  # longer than the client's read timeout: it must give up first
            return
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _send(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Scripted.scripts, _Scripted.lists, _Scripted.watches = [], 0, []
    _Scripted.silence_over.clear()
    with serving(_Scripted) as url:
        yield url


async def _watch_until(url: str, done: Any, timeout: float = 10.0) -> tuple[list[tuple[str, str]], int]:
    changes: list[tuple[str, str]] = []
    resyncs = 0

    def listed(namespace: str | None, versions: Any, after_break: bool) -> None:
        nonlocal resyncs
        assert namespace == "team-a" and versions == {}  # the scripted lists hold no Secret
        if after_break:
            resyncs += 1

    watch = secret_watch(
        api_client_for(url),
        ["team-a"],
        lambda ns, n, _v, _owner: changes.append((ns, n)),
        listed,
        read_timeout=0.5,
    )
    watch.start()
    deadline = time.monotonic() + timeout
    try:
        while not done(changes, resyncs):
            assert time.monotonic() < deadline, (
                f"changes {changes}, resyncs {resyncs}, watches {_Scripted.watches}"
            )
            await asyncio.sleep(0.02)
    finally:
        await stop_watch(watch, _Scripted.silence_over)
    return changes, resyncs


def test_410_gone_relists_and_resyncs_then_follows_events(server: str) -> None:
    _Scripted.scripts = ["gone", "event"]
    changes, resyncs = asyncio.run(_watch_until(server, lambda c, r: c and r))
    assert changes == [("team-a", "fleet-api")]
    assert resyncs == 1 and _Scripted.lists == 2
    assert _Scripted.watches[:2] == ["gone", "event"]


def test_a_silent_watch_is_given_up_after_the_read_timeout(server: str) -> None:
    _Scripted.scripts = ["silent", "event"]
    started = time.monotonic()
    changes, resyncs = asyncio.run(_watch_until(server, lambda c, r: c and r))
    assert changes == [("team-a", "fleet-api")] and resyncs == 1
    assert time.monotonic() - started < 3  # the silent stream lasted 3 s; the client left it earlier


def test_an_event_carries_the_cluster_credential_owner_label(server: str) -> None:
    """So a Secret of ours that lands outside the selection is told from anyone else's."""
    _Scripted.scripts = ["event", "owned"]
    seen: list[tuple[str, str, str, str | None]] = []

    async def run() -> None:
        watch = secret_watch(
            api_client_for(server), ["team-a"], lambda *change: seen.append(change), lambda *_: None
        )
        watch.start()
        deadline = time.monotonic() + 10
        try:
            while len(seen) < 2:
                assert time.monotonic() < deadline, seen
                await asyncio.sleep(0.02)
        finally:
            await stop_watch(watch, _Scripted.silence_over)

    asyncio.run(run())
    assert seen == [("team-a", "fleet-api", "11", None), ("team-a", "simacan-token", "12", "u-1")]
