"""The generic metadata-only watch against a scripted API server: a list comes before the single
changes that follow it, bookmarks move the resourceVersion without an event, and every break (a
410 Gone, a failed watch request) leads to a fresh list flagged as one after a break. The
namespace watch on top of it always hands over a complete view first."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest

from localenv.loopback import serving
from simacan_token_operator.kube.namespacewatch import namespace_watch
from simacan_token_operator.kube.secretwatch import secret_watch
from simacan_token_operator.kube.watch import MetadataWatch, Scope
from simacan_token_operator.model.clusterspec import NamespaceInfo
from tests.unit.kubeapi import api_client_for, stop_watch


def _namespace(name: str, version: str, **labels: str) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "metadata": {"name": name, "resourceVersion": version, "labels": labels},
    }


class _Scripted(BaseHTTPRequestHandler):
    """A list answers `items` at resourceVersion `list_version`, then takes the next of
    `next_items` (what changed during a break). Each watch plays the next script: a list of
    events, 'gone' (an ERROR 410 event), 'fail' (HTTP 500) or 'silent' (headers, then nothing)."""

    scripts: ClassVar[list[Any]] = []
    items: ClassVar[list[dict[str, Any]]] = []
    next_items: ClassVar[list[list[dict[str, Any]]]] = []
    requests: ClassVar[list[tuple[str, dict[str, str]]]] = []
    silence_over: ClassVar[threading.Event] = threading.Event()
    headers_go: ClassVar[threading.Event] = threading.Event()
    """'late-silent' holds a watch's response headers until this is set, then stays silent."""
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.requests.append((url.path, query))
        if query.get("watch") != "true":
            self._send(
                200,
                {
                    "kind": "PartialObjectMetadataList",
                    "metadata": {"resourceVersion": "10"},
                    "items": self.items,
                },
            )
            if self.next_items:
                type(self).items = self.next_items.pop(0)
            return
        script: Any = self.scripts.pop(0) if self.scripts else "silent"
        if script == "late-silent":
            self.headers_go.wait(5)
            script = "silent"
        if script == "fail":
            self._send(500, {"kind": "Status", "code": 500, "reason": "InternalError"})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if script == "gone":
            self._chunk({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}})
        elif script == "silent":
            self.silence_over.wait(3)  # longer than the client's read timeout: it gives up first
            return
        else:
            for event in script:
                self._chunk(event)
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Scripted.scripts, _Scripted.items, _Scripted.next_items, _Scripted.requests = [], [], [], []
    _Scripted.silence_over.clear()
    _Scripted.headers_go.clear()
    with serving(_Scripted) as url:
        yield url


async def _run_until(watch: MetadataWatch, done: Callable[[], bool], timeout: float = 10.0) -> None:
    watch.start()
    deadline = time.monotonic() + timeout
    try:
        while not done():
            assert time.monotonic() < deadline, f"requests so far: {_Scripted.requests}"
            await asyncio.sleep(0.02)
    finally:
        await stop_watch(watch, _Scripted.silence_over)


def _watches() -> list[dict[str, str]]:
    return [query for _, query in _Scripted.requests if query.get("watch") == "true"]


def test_a_list_comes_first_then_single_changes_and_a_break_lists_again(server: str) -> None:
    seen: list[tuple[str, Any]] = []
    _Scripted.items = [_namespace("ns-a", "5")]
    _Scripted.scripts = [
        [
            {"type": "ADDED", "object": _namespace("ns-b", "11")},
            {
                "type": "BOOKMARK",
                "object": {"kind": "PartialObjectMetadata", "metadata": {"resourceVersion": "12"}},
            },
        ],
        "gone",
        [{"type": "DELETED", "object": _namespace("ns-a", "13")}],
    ]
    watch = MetadataWatch(
        api_client_for(server),
        [Scope("/api/v1/namespaces", "namespaces", "test-watch")],
        lambda _scope, items, after_break: seen.append(
            ("listed", ([i["metadata"]["name"] for i in items], after_break))
        ),
        lambda type_, obj: seen.append((type_, obj["metadata"].get("name"))),
    )
    asyncio.run(_run_until(watch, lambda: ("DELETED", "ns-a") in seen))
    assert seen == [
        ("listed", (["ns-a"], False)),
        ("ADDED", "ns-b"),  # the bookmark is no event
        ("listed", (["ns-a"], True)),  # after the 410: a fresh list, flagged as one after a break
        ("DELETED", "ns-a"),
    ]
    lists = [query for _, query in _Scripted.requests if query.get("watch") != "true"]
    assert lists[:2] == [{}, {}], "without a page size, one list each time"
    watches = _watches()
    assert [w["resourceVersion"] for w in watches[:3]] == ["10", "12", "10"], "resumes from the bookmark"
    assert all("limit" not in w and w["allowWatchBookmarks"] == "true" for w in watches)


def test_a_stop_while_the_watch_waits_for_its_headers_still_ends_it_at_once(server: str) -> None:
    """stop() cuts the streams it knows; a watch whose headers arrive after it must see that it
    was stopped rather than read a silent stream until the read timeout (here 30 s)."""
    _Scripted.scripts = ["late-silent"]
    watch = MetadataWatch(
        api_client_for(server),
        [Scope("/api/v1/namespaces", "namespaces", "test-watch")],
        lambda _scope, items, after_break: None,
        lambda type_, obj: None,
        read_timeout=30.0,
    )

    async def stop_during_headers() -> float:
        watch.start()
        deadline = time.monotonic() + 10
        while not _watches():
            assert time.monotonic() < deadline, "no watch request"
            await asyncio.sleep(0.02)
        stopping = asyncio.ensure_future(watch.stop())
        await asyncio.sleep(0.05)  # stop() has set the flag and cut the streams it knew (none)
        began = time.monotonic()
        _Scripted.headers_go.set()  # now the response arrives, and its stream stays silent
        await stopping
        return time.monotonic() - began

    try:
        took = asyncio.run(stop_during_headers())
    finally:
        _Scripted.silence_over.set()
    assert took < 2.0, f"stop() took {took:.1f}s: the late stream was read until a timeout"


def test_a_failed_watch_request_is_retried_after_a_fresh_list(server: str) -> None:
    seen: list[tuple[str, Any]] = []
    _Scripted.scripts = ["fail", [{"type": "MODIFIED", "object": _namespace("ns-a", "11")}]]
    watch = MetadataWatch(
        api_client_for(server),
        [Scope("/api/v1/namespaces", "namespaces", "test-watch")],
        lambda _scope, items, after_break: seen.append(("listed", after_break)),
        lambda type_, obj: seen.append((type_, obj["metadata"].get("name"))),
    )
    asyncio.run(_run_until(watch, lambda: ("MODIFIED", "ns-a") in seen))
    assert seen == [("listed", False), ("listed", True), ("MODIFIED", "ns-a")]


def test_the_namespace_watch_replaces_its_view_after_a_break(server: str) -> None:
    views: list[dict[str, NamespaceInfo]] = []
    changes: list[tuple[str, NamespaceInfo | None]] = []
    _Scripted.items = [_namespace("ns-a", "5", team="a"), _namespace("ns-b", "6")]
    _Scripted.next_items = [[_namespace("ns-b", "6")]]  # ns-a is deleted during the break
    _Scripted.scripts = [
        [{"type": "MODIFIED", "object": _namespace("ns-b", "11", team="b")}],
        "gone",
        [{"type": "DELETED", "object": _namespace("ns-b", "12")}],
    ]
    watch = namespace_watch(
        api_client_for(server), views.append, lambda name, info: changes.append((name, info))
    )
    asyncio.run(_run_until(watch, lambda: ("ns-b", None) in changes))
    assert views == [
        {"ns-a": NamespaceInfo({"team": "a"}, False), "ns-b": NamespaceInfo({}, False)},
        {"ns-b": NamespaceInfo({}, False)},  # a namespace deleted during the break does not linger
    ]
    assert changes == [("ns-b", NamespaceInfo({"team": "b"}, False)), ("ns-b", None)]


def test_the_secret_watch_has_a_thread_per_namespace_and_lists_one_item_for_a_version(server: str) -> None:
    changes: list[tuple[str, str]] = []
    _Scripted.scripts = [
        [
            {
                "type": "ADDED",
                "object": {"metadata": {"namespace": "team-a", "name": "one", "resourceVersion": "11"}},
            }
        ],
        [
            {
                "type": "ADDED",
                "object": {"metadata": {"namespace": "team-b", "name": "two", "resourceVersion": "12"}},
            }
        ],
    ]
    watch = secret_watch(
        api_client_for(server),
        ["team-a", "team-b"],
        lambda ns, n, _version, _owner: changes.append((ns, n)),
        lambda _ns, _versions, _after_break: None,
    )
    asyncio.run(_run_until(watch, lambda: len(changes) == 2))
    assert sorted(changes) == [("team-a", "one"), ("team-b", "two")]
    lists = {path: query for path, query in _Scripted.requests if query.get("watch") != "true"}
    assert lists == {
        "/api/v1/namespaces/team-a/secrets": {"limit": "100"},
        "/api/v1/namespaces/team-b/secrets": {"limit": "100"},
    }
    assert {path for path, query in _Scripted.requests if query.get("watch") == "true"} == set(lists)
