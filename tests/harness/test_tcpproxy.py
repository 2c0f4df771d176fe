"""The black-hole proxy: forwards, then swallows bytes without FIN or RST, then heals."""

from __future__ import annotations

import socket
import socketserver
from collections.abc import Iterator

import pytest

from localenv.loopback import port_of, serving
from localenv.tcpproxy import TcpProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(1024):
            self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with (
        serving(_Echo, server_class=socketserver.ThreadingTCPServer) as url,
        TcpProxy("127.0.0.1", port_of(url)) as proxy,
    ):
        yield proxy


def _connect(proxy: TcpProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    sock.settimeout(0.5)
    return sock


def test_forwards_both_ways(proxy: TcpProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"ping")
        assert sock.recv(16) == b"ping"


def test_blackhole_swallows_bytes_without_closing_the_connection(proxy: TcpProxy) -> None:
    with _connect(proxy) as old:
        old.sendall(b"before")
        assert old.recv(16) == b"before"
        proxy.blackhole()
        old.sendall(b"lost")
        with pytest.raises(TimeoutError):  # no answer, and no FIN (b"") or RST (ConnectionResetError)
            old.recv(16)
        with _connect(proxy) as new:  # a new connection is accepted, then nothing happens either
            new.sendall(b"lost too")
            with pytest.raises(TimeoutError):
                new.recv(16)

        proxy.heal()
        with _connect(proxy) as healed:
            healed.sendall(b"back")
            assert healed.recv(16) == b"back"
        old.sendall(b"still lost")  # the black-holed connection stays dead, as after a lost NAT entry
        with pytest.raises(TimeoutError):
            old.recv(16)
