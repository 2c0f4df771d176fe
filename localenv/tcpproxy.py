"""A TCP proxy on loopback that a test controls: forward, black-hole, heal.

A black hole is what a dead node, a dropped NAT entry or a partition looks like to a client:
its bytes go out and nothing comes back, and no FIN or RST ever arrives. Killing a process
cannot show that (the kernel resets its connections), so tests that need it put this proxy
between a client and the server and call `blackhole()`.

While black-holed, every byte in either direction is read and dropped, on connections open
at that moment and on new ones; nobody is told. `heal()` makes new connections work again;
connections that were black-holed stay dead (as after a lost NAT entry: their TCP state is
gone), so a client must notice by its own timeouts and reconnect. Threads, two per
connection: the proxy serves a handful of connections in tests, not production traffic.

Usage::

    with TcpProxy("127.0.0.1", apiserver_port) as proxy:
        ...  # point the client at 127.0.0.1:proxy.port
        proxy.blackhole()
        proxy.heal()
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Self

from localenv.loopback import LoopbackService

log = logging.getLogger(__name__)

CHUNK = 65536


@dataclass(eq=False)
class _Connection:
    client: socket.socket
    upstream: socket.socket | None
    dead: bool = False
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()

    def close_upstream(self) -> None:
        """The server went away from a dead connection: the client must not learn of it."""
        if self.upstream is not None:
            with contextlib.suppress(OSError):
                self.upstream.close()


class TcpProxy(LoopbackService):
    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server((listen_host, 0))
        self._listener.settimeout(0.2)
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self._blackholed = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.accepted = 0
        self.blackholed_at: float | None = None
        """time.monotonic() of the last blackhole() call."""

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def blackholed(self) -> bool:
        return self._blackholed

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._accept_loop, name=f"tcpproxy:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() now, not at its 0.2 s timeout
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()

    def blackhole(self) -> None:
        """From now on drop every byte, on open and new connections, and tell nobody."""
        with self._lock:
            self._blackholed = True
            self.blackholed_at = time.monotonic()
            for connection in self._connections:
                connection.dead = True

    def heal(self) -> None:
        """New connections are forwarded again; black-holed ones stay dead."""
        with self._lock:
            self._blackholed = False

    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for c in self._connections if not c.closed)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self.accepted += 1
            with self._lock:
                dead = self._blackholed
            upstream = None
            if not dead:
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                    upstream.settimeout(None)
                except OSError:
                    client.close()  # the server is down: the client sees a refused-like close
                    continue
            connection = _Connection(client, upstream, dead=dead)
            with self._lock:
                self._connections.add(connection)
            threading.Thread(target=self._pump, args=(connection, True), daemon=True).start()
            if upstream is not None:
                threading.Thread(target=self._pump, args=(connection, False), daemon=True).start()

    def _pump(self, connection: _Connection, from_client: bool) -> None:
        source = connection.client if from_client else connection.upstream
        sink = connection.upstream if from_client else connection.client
        assert source is not None
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                if connection.dead or sink is None:
                    continue  # the black hole: read and dropped
                sink.sendall(data)
        except OSError:
            pass
        if connection.dead and not from_client:
            connection.close_upstream()  # keep the client's side open: it must not be told
            return
        connection.close()
        with self._lock:
            self._connections.discard(connection)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m localenv.tcpproxy HOST:PORT`: forward; type `b` + Enter to black-hole, `h` to heal."""
    parser = argparse.ArgumentParser(prog="python -m localenv.tcpproxy")
    parser.add_argument("target", help="HOST:PORT to forward to")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    with TcpProxy(host, int(port)) as proxy:
        print(f"listening on 127.0.0.1:{proxy.port}; b=black-hole, h=heal, q=quit", flush=True)
        while (line := input().strip()) != "q":
            if line == "b":
                proxy.blackhole()
            elif line == "h":
                proxy.heal()
            print("black-holed" if proxy.blackholed else "forwarding", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
