"""Sockets to the API server notice a dead peer within about 25 s, not the kernel's two hours."""

from __future__ import annotations

import socket

from simacan_token_operator.kube import deadlines


def test_kopf_and_client_sockets_get_keepalive_and_a_user_timeout() -> None:
    with deadlines.keepalive_socket((socket.AF_INET, socket.SOCK_STREAM, 0, "", ("127.0.0.1", 0))) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        interval = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
        count = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
        assert idle + interval * count <= 30
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) <= 30_000


def test_a_silent_watch_is_dropped_while_the_server_still_buffers_what_it_missed() -> None:
    assert 60 < deadlines.WATCH_READ_TIMEOUT < 75  # bookmarks every 60 s; 75 s of events buffered
    assert deadlines.WATCH_READ_TIMEOUT < deadlines.WATCH_SERVER_TIMEOUT
    assert deadlines.CONNECT_TIMEOUT + deadlines.READ_TIMEOUT < 30
