"""How long any Kubernetes call may take, and how fast a dead connection is noticed.

Without these a Lease renewal or a watch on a half-open connection (a node or NAT that
silently drops traffic: no FIN, no RST) hangs for the kernel's two hours, long after a
standby has taken over. Every request gets connect and read timeouts; watches ask the
server to end them and read with a slightly longer client timeout; TCP keepalive and
TCP_USER_TIMEOUT drop a dead peer within about 25 s, whether the socket is idle or has
unacknowledged data in flight.
"""

from __future__ import annotations

import socket
from typing import Any

CONNECT_TIMEOUT = 5.0
"""Seconds to set up a connection (TCP and TLS) to the API server."""
READ_TIMEOUT = 15.0
"""Seconds to wait for any byte of a response to a short request."""
WATCH_SERVER_TIMEOUT = 240
"""`timeoutSeconds` of a watch: the API server ends it cleanly after this long."""
WATCH_READ_TIMEOUT = 70.0
"""A watch asked for bookmarks hears from the server at least once a minute; silence longer
than this means the connection is dead, so the watch is dropped and resumed (kopf's default
inactivity timeout, chosen to fall within the API server's 75 s of buffered events)."""

KEEPALIVE_IDLE = 10
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
USER_TIMEOUT_MS = (KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT) * 1000
"""Unacknowledged data is given up on after the same 25 s (keepalive only probes idle sockets)."""


def keepalive_socket_options() -> list[tuple[int, int, int]]:
    """Options for every socket to the API server (urllib3 `socket_options` format).

    urllib3 replaces its defaults with the list it is given, so TCP_NODELAY is kept here.
    """
    options = [
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    ]
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS),
    ):
        if hasattr(socket, name):  # Linux has all four; other platforms keep what they have
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


def keepalive_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """aiohttp's `socket_factory`: the same options for kopf's connections."""
    family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = socket.socket(family, type_, proto)
    for level, option, value in keepalive_socket_options():
        sock.setsockopt(level, option, value)
    return sock
