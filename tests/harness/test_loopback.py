"""localenv/loopback.py: a scripted server answers on loopback and stops at once, not after the
standard library's half-second poll, even with a handler still asleep."""

from __future__ import annotations

import ssl
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

from localenv.fakeauth import write_certificate
from localenv.loopback import LoopbackService, port_of, serving


class _Hello(BaseHTTPRequestHandler):
    asleep: ClassVar[threading.Event] = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/sleep":
            self.asleep.set()
            time.sleep(5)
            return
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _get(url: str, context: ssl.SSLContext | None = None) -> bytes:
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        body: bytes = response.read()
        return body


def test_a_served_handler_answers_and_stops_within_a_tenth_of_a_second() -> None:
    _Hello.asleep.clear()
    block = serving(_Hello)
    url = block.__enter__()
    try:
        assert url == f"http://127.0.0.1:{port_of(url)}"
        assert _get(url + "/") == b"hello"
        threading.Thread(target=lambda: _get(url + "/sleep"), daemon=True).start()
        assert _Hello.asleep.wait(5)
    finally:
        began = time.monotonic()
        block.__exit__(None, None, None)
        took = time.monotonic() - began
    assert took < 0.1, f"stopping took {took:.2f}s"


def test_a_tls_context_serves_https(tmp_path: Path) -> None:
    files = write_certificate(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(files.cert_file, files.key_file)
    with serving(_Hello, tls=server_context) as url:
        assert url.startswith("https://127.0.0.1:")
        assert _get(url + "/", ssl.create_default_context(cafile=str(files.ca_file))) == b"hello"


class _Counted(LoopbackService):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> _Counted:
        self.calls.append("start")
        return self

    def stop(self) -> None:
        self.calls.append("stop")


def test_with_starts_a_service_and_closes_it_even_on_error() -> None:
    service = _Counted()
    try:
        with service as entered:
            assert entered is service and service.calls == ["start"]
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert service.calls == ["start", "stop"]
