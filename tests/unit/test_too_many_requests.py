"""A 429 from API Priority and Fairness is waited out for its Retry-After and sent again, a bounded
number of times, holding back every caller of the budget meanwhile. Against a real HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localenv.loopback import serving
from localenv.polling import eventually
from simacan_token_operator.kube.api import TOO_MANY_REQUESTS_RETRIES, retry_after
from simacan_token_operator.kube.budget import RequestBudget
from simacan_token_operator.kube.client import Kube, KubeError, NotLeader
from simacan_token_operator.kube.secretwatch import secret_watch
from tests.unit import kubeapi


def api_client_for(url: str) -> Any:
    """As the operator's client is configured (cli.load_kube_config): urllib3 retries nothing
    itself (it would otherwise wait out a 429's Retry-After inside the thread, unbudgeted)."""
    configuration = kubeapi.api_client_for(url).configuration
    configuration.retries = False
    return client.ApiClient(configuration)


SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "fleet-api"}, "type": "Opaque"}


@dataclass
class Busy:
    """Answers the first `rejections` requests 429 with `retry_after`, the rest as the API would."""

    rejections: int
    retry_after: str | None = "1"
    seen: list[tuple[float, str, str]] = field(default_factory=list)
    """(monotonic time, method, path) of every request, as it arrived."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, path: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self.lock:
            self.seen.append((time.monotonic(), method, path))
            rejected = len(self.seen) <= self.rejections
        if rejected:
            headers = {} if self.retry_after is None else {"Retry-After": self.retry_after}
            status = {"kind": "Status", "code": 429, "reason": "TooManyRequests", "message": "too many"}
            return 429, headers, status
        if method == "POST":
            return 201, {}, {**SECRET, "metadata": {"name": "fleet-api", "resourceVersion": "1"}}
        return 404, {}, {"kind": "Status", "code": 404, "reason": "NotFound", "message": "not found"}


@pytest.fixture
def serve() -> Iterator[Any]:
    servers = contextlib.ExitStack()

    def start(busy: Busy) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                status, headers, body = busy.answer(self.command, self.path)
                raw = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json"}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PUT = do_PATCH = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return servers.enter_context(serving(Handler))

    with servers:
        yield start


def test_a_write_answered_429_is_sent_again_after_its_retry_after(serve: Any) -> None:
    busy = Busy(rejections=1, retry_after="0.5")
    kube = Kube(api_client_for(serve(busy)))
    created = asyncio.run(kube.create_secret("team-a", SECRET))
    assert created["metadata"]["resourceVersion"] == "1", "the caller sees the answer, not the 429"
    (first, *_), (second, *_) = busy.seen
    assert len(busy.seen) == 2 and second - first >= 0.45


class _Watched(RequestBudget):
    """A budget that says when it was told to hold off (the 429 has reached the caller)."""

    def __init__(self) -> None:
        super().__init__(qps=1000, burst=1000)
        self.held = asyncio.Event()

    def hold_off(self, seconds: float) -> None:
        super().hold_off(seconds)
        self.held.set()


def test_a_429_holds_back_every_caller_of_the_budget_until_its_retry_after(serve: Any) -> None:
    busy = Busy(rejections=1, retry_after="0.5")

    async def scenario() -> None:
        budget = _Watched()
        kube = Kube(api_client_for(serve(busy)), budget=budget)
        writing = asyncio.create_task(kube.create_secret("team-a", SECRET))
        await asyncio.wait_for(budget.held.wait(), 5)
        reads = [kube.read_secret("team-a", f"other-{i}") for i in range(3)]  # nothing to do with it
        assert await asyncio.gather(*reads) == [None, None, None]
        await writing

    asyncio.run(scenario())
    rejected_at = busy.seen[0][0]
    later = [arrived - rejected_at for arrived, _, _ in busy.seen[1:]]
    assert len(later) == 4 and min(later) >= 0.45, f"sent {min(later):.2f}s after the 429"


def test_a_request_that_stays_429_fails_after_a_bounded_number_of_tries(serve: Any) -> None:
    busy = Busy(rejections=1000, retry_after="0")
    kube = Kube(api_client_for(serve(busy)))
    with pytest.raises(KubeError) as raised:
        asyncio.run(kube.read_secret("team-a", "fleet-api"))
    assert raised.value.status == 429
    assert len(busy.seen) == TOO_MANY_REQUESTS_RETRIES + 1


def test_a_write_sent_again_after_a_429_asks_the_fence_again(serve: Any) -> None:
    """Leadership may end during the Retry-After: the second try is then never sent."""

    class OnceOnly:
        def __init__(self) -> None:
            self.asked = 0

        def write_budget(self) -> float | None:
            self.asked += 1
            return 10.0 if self.asked == 1 else None

        def track(self, write: asyncio.Future[Any]) -> None:
            pass

    busy = Busy(rejections=1, retry_after="0.2")
    fence = OnceOnly()
    kube = Kube(api_client_for(serve(busy)), fence=fence)
    with pytest.raises(NotLeader):
        asyncio.run(kube.create_secret("team-a", SECRET))
    assert len(busy.seen) == 1 and fence.asked == 2


@dataclass
class _Answer:
    """What ApiException reads from a urllib3 response."""

    headers: dict[str, str]
    status: int = 429
    reason: str = "Too Many Requests"
    data: bytes = b""


def _rejected(retry_after_header: str | None) -> ApiException:
    headers = {} if retry_after_header is None else {"Retry-After": retry_after_header}
    return ApiException(http_resp=_Answer(headers))


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), ("0", 0.0), ("0.5", 0.5), ("3600", 10.0), ("-4", 0.0), (None, 1.0), ("soon", 1.0)],
)
def test_retry_after_is_read_as_seconds_within_bounds(header: str | None, seconds: float) -> None:
    assert retry_after(_rejected(header)) == seconds


def test_retry_after_may_be_an_http_date() -> None:
    in_four_seconds = email.utils.formatdate(time.time() + 4, usegmt=True)
    assert 2.5 <= retry_after(_rejected(in_four_seconds)) <= 4.0


class _ListBusyOnce(http.server.BaseHTTPRequestHandler):
    """The first list of Secrets is answered 429 with Retry-After: 1 (twice the watch's first
    backoff, 0.5 s); watches stay open, silent."""

    lists: ClassVar[list[float]] = []
    silence_over: ClassVar[threading.Event] = threading.Event()

    def do_GET(self) -> None:
        if "watch=true" in self.path:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.silence_over.wait(3)
            return
        self.lists.append(time.monotonic())
        first = len(self.lists) == 1
        raw = json.dumps(
            {"kind": "Status", "code": 429} if first else {"metadata": {"resourceVersion": "7"}, "items": []}
        ).encode()
        self.send_response(429 if first else 200)
        if first:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_watch_whose_list_is_answered_429_lists_again_after_its_retry_after() -> None:
    _ListBusyOnce.lists = []
    _ListBusyOnce.silence_over.clear()

    async def scenario(url: str) -> None:
        watch = secret_watch(api_client_for(url), ["team-a"], lambda *_: None, lambda *_: None)
        watch.start()
        try:
            await asyncio.to_thread(eventually, lambda: len(_ListBusyOnce.lists) >= 2, 10.0)
        finally:
            await kubeapi.stop_watch(watch, _ListBusyOnce.silence_over)

    with serving(_ListBusyOnce) as url:
        asyncio.run(scenario(url))
    first, second = _ListBusyOnce.lists[:2]
    assert second - first >= 0.95, f"listed again {second - first:.2f}s after the 429 (Retry-After: 1)"
