"""Servers on loopback: a small scripted one, served from a thread for the length of a block, and
the start/stop/`with` protocol of the larger ones (the fake Auth API, the TCP proxy).

`serving` is the one way tests and scenarios stand up a scripted server. It polls for shutdown
every 10 ms: the standard library's default of 0.5 s made every test that stopped one wait half a
second for it.
"""

from __future__ import annotations

import contextlib
import socketserver
import ssl
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Self

SHUTDOWN_POLL = 0.01
"""Seconds between serve_forever's checks for shutdown(); the longest a stop waits for it."""


@contextlib.contextmanager
def serving(
    handler: type[socketserver.BaseRequestHandler],
    *,
    tls: ssl.SSLContext | None = None,
    server_class: type[ThreadingHTTPServer | socketserver.ThreadingTCPServer] = ThreadingHTTPServer,
) -> Iterator[str]:
    """Serve `handler` on 127.0.0.1 (over TLS with a server context `tls`); yields the base URL
    (http:// or https://, for a plain TCP server tcp://). Handler threads are daemons: one still
    sleeping in a scripted delay does not hold up the end of the block."""
    server = server_class(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL}, name="loopback", daemon=True
    )
    thread.start()
    scheme = "tcp" if not issubclass(server_class, ThreadingHTTPServer) else "https" if tls else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def port_of(url: str) -> int:
    """The port of a URL `serving` yielded."""
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


class LoopbackService:
    """A server on loopback that runs between start() and stop(); `with` starts it and closes it."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop, and drop what a restart would have reused; by default there is nothing more."""
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
