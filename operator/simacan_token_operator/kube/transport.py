"""The operator's own calls (kube.Calls) sent from the event loop on one aiohttp session.

The official client is synchronous: each call through it ran in a thread of the default pool,
and the hand-over to and from that thread and urllib3's request machinery cost 0.5 ms of CPU
per request against 0.2 ms on aiohttp (2,000 Secret creates on kube-apiserver, one process,
16 at a time). In a wave the operator is bound by its own CPU, so that is its write rate.

The client still does everything but the sending: the loaders fill its configuration
(kubeconfig or ServiceAccount), and `param_serialize` builds the URL and headers, with a
bearer token refreshed as the loaders arrange. TLS, the proxy and the socket options come from
the same configuration, read once. The metadata watches and the Lease keep the client's own
transport in threads of their own (watch.py, leader.py): a wave never delays a Lease renewal.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
from kubernetes.client.exceptions import ApiException
from kubernetes.client.rest import should_bypass_proxies

from simacan_token_operator.kube.deadlines import CONNECT_TIMEOUT, READ_TIMEOUT, keepalive_socket
from simacan_token_operator.kube.metered import TRANSPORT_ERROR


class SessionTransport:
    """Sends a request and answers the body's bytes; non-2xx raises the client's ApiException
    (status, reason, body, headers), as the client's own transport does.

    The session is made on first use, in the running loop, and ended by `aclose`."""

    def __init__(self, api_client: Any) -> None:
        self._client = api_client
        configuration = api_client.configuration
        self._report = getattr(api_client, "report", None)
        self._limit = int(configuration.connection_pool_maxsize or 32)
        self._proxy: str | None = None
        self._proxy_headers: Mapping[str, str] | None = None
        bypass = should_bypass_proxies(configuration.host, configuration.no_proxy or "")
        if configuration.proxy and not bypass:
            self._proxy, self._proxy_headers = configuration.proxy, configuration.proxy_headers
        self._server_hostname = configuration.tls_server_name or (
            configuration.assert_hostname if isinstance(configuration.assert_hostname, str) else None
        )
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        waits: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
        deadline: float | None = None,
    ) -> bytes:
        """`waits` is (connect, read) in seconds; `deadline`, if given, bounds the whole call."""
        method, url, headers = prepared(
            self._client, method, path, query, body is not None, content_type, accept
        )
        data = None if body is None else json.dumps(body).encode()
        connect, read = waits
        try:
            async with self._opened().request(
                method,
                url,
                headers=headers,
                data=data,
                proxy=self._proxy,
                proxy_headers=self._proxy_headers,
                server_hostname=self._server_hostname,
                timeout=aiohttp.ClientTimeout(total=deadline, sock_connect=connect, sock_read=read),
            ) as response:
                raw = await response.read()
        except Exception:
            self._counted(method, url, TRANSPORT_ERROR)
            raise
        self._counted(method, url, str(response.status))
        if not 200 <= response.status <= 299:
            error = ApiException(status=response.status, reason=response.reason)
            error.body, error.headers = raw.decode(errors="replace"), response.headers
            raise error
        return raw

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _opened(self) -> aiohttp.ClientSession:
        session, loop = self._session, asyncio.get_running_loop()
        if session is None or session.closed or self._loop is not loop:
            self._loop = loop
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._limit,
                    ssl=ssl_context(self._client.configuration),
                    socket_factory=keepalive_socket,
                ),
                # What the client's transport sent: no compression to undo, no cookies to keep.
                skip_auto_headers=("Accept-Encoding",),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return session

    def _counted(self, method: str, url: str, code: str) -> None:
        if self._report is not None:
            self._report(method, url, code)


def prepared(
    api_client: Any,
    method: str,
    path: str,
    query: Mapping[str, Any] | None,
    has_body: bool,
    content_type: str,
    accept: str,
) -> tuple[str, str, dict[str, str]]:
    """Method, URL and headers (with the bearer token) as the client builds them for `path`."""
    headers = {"Accept": accept}
    if has_body:
        headers["Content-Type"] = content_type
    method, url, headers, _, _ = api_client.param_serialize(
        method=method,
        resource_path=path,
        query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
        header_params=headers,
        auth_settings=["BearerToken"],
    )
    return method, url, headers


def ssl_context(configuration: Any) -> ssl.SSLContext:
    """The TLS the client's own transport (urllib3) would use with `configuration`."""
    # With neither a CA file nor CA data this loads the system's CAs, as urllib3 does.
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert, cadata=configuration.ca_cert_data)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    if configuration.assert_hostname is False or not configuration.verify_ssl:
        context.check_hostname = False
    if not configuration.verify_ssl:
        context.verify_mode = ssl.CERT_NONE
    return context
