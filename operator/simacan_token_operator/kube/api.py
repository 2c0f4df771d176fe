"""The transport to the API server and the guarantees every call through it keeps.

The operator's calls (Calls) are sent from the event loop on aiohttp (transport.py); the
watches, the Lease and the status command use the official client's own synchronous transport
(RawApi), in threads of their own. Bodies are plain dicts (raw JSON). Nothing here logs a body:
Secrets pass through. Every call has connect and read timeouts (deadlines.py), every write
first asks the fence whether this replica may still write, and names are validated and
quoted before they become part of a path. Every call waits for its turn in the request
budget (budget.py) first, and a 429 from API Priority and Fairness is sent again after its
Retry-After, a bounded number of times, without the caller seeing it. kube.Kube builds the
operator's calls on this.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import aiohttp
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from simacan_token_operator.kube.budget import RequestBudget
from simacan_token_operator.kube.deadlines import CONNECT_TIMEOUT, READ_TIMEOUT
from simacan_token_operator.kube.transport import SessionTransport, prepared
from simacan_token_operator.model.body import Body
from simacan_token_operator.model.names import is_dns_subdomain

METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
"""A list of metadata only (names, labels, uids, versions): no Secret data, no pod specs."""

TOO_MANY_REQUESTS_RETRIES = 10
"""How often a request answered 429 is sent again before its caller sees the 429 (client-go's
default too); every wait is its Retry-After, at most RETRY_AFTER_CAP."""
RETRY_AFTER_CAP = 10.0
RETRY_AFTER_DEFAULT = 1.0
"""A 429 without a usable Retry-After (APF always sends one) waits this long."""
AUTH_REFRESH_SECONDS = 1.0
"""How often the client's credentials hook may run (refreshing_at_most_every)."""


class KubeError(Exception):
    """A Kubernetes API call failed; `status` is the HTTP code (0 for transport errors)."""

    def __init__(self, action: str, status: int, reason: str) -> None:
        super().__init__(f"{action} failed: HTTP {status} {reason}".strip())
        self.status = status


class InvalidName(KubeError, ValueError):
    """A name that is not a valid DNS-1123 subdomain never reaches the API server as a path
    (`../../other-ns/secrets/x` would otherwise address another namespace's Secret). A
    KubeError with the 422 the API server gives invalid names, so callers need no new case."""

    def __init__(self, what: str, name: str) -> None:
        shown = name if len(name) <= 80 else name[:80] + "..."
        super().__init__(f"using {what} {shown!r}", 422, "not a valid DNS-1123 subdomain name")


class NotLeader(KubeError):
    """This replica lost (or never held) the Lease: it must not write."""

    def __init__(self, action: str) -> None:
        super().__init__(action, 0, "refused: this replica is not the leader")


class Fence(Protocol):
    def write_budget(self) -> float | None:
        """Seconds a write may take from now; None when this replica must not write at all."""

    def track(self, write: asyncio.Future[Any]) -> None:
        """A write has been sent; it ends (answered, failed or timed out) when `write` is done."""


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark the outcome of a write as seen even when its caller was cancelled meanwhile."""
    if not future.cancelled():
        future.exception()


def checked_name(what: str, name: str) -> str:
    """`name` quoted for a URL path, after checking it is a DNS-1123 subdomain (as Kubernetes
    requires of Secret, namespace and custom object names)."""
    if not is_dns_subdomain(name):
        raise InvalidName(what, str(name))
    return urllib.parse.quote(name, safe="")


class RawApi:
    """The official client's transport (kubeconfig or ServiceAccount auth, TLS, token refresh)
    without its generated API classes: those validate every call through pydantic and load
    hundreds of model classes, some 20 MiB the operator has no use for. Bodies are dicts."""

    def __init__(self, api_client: Any) -> None:
        self._client = api_client

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
    ) -> Any:
        """Send one request; returns the client's RESTResponse, raises ApiException on non-2xx.

        `timeout` is (connect, read) in seconds: no call waits forever on a dead connection."""
        # The body goes to the transport as it is (which encodes it as JSON), not through
        # param_serialize: that first walks all of it to convert model objects, and ours are plain
        # JSON already; the walk was 6 % of the operator's CPU in a first sync of 2,000 (py-spy).
        method, url, headers = prepared(
            self._client, method, path, query, body is not None, content_type, accept
        )
        response = self._client.call_api(method, url, headers, body, None, _request_timeout=timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Body:
        return decoded(self.request(method, path, **kwargs).read())


class Calls:
    """The operator's calls from the event loop (transport.py): every call within the request
    budget and sent again after a 429, every failure a KubeError, every write fenced."""

    def __init__(
        self, api_client: Any, fence: Fence | None = None, budget: RequestBudget | None = None
    ) -> None:
        self._transport = SessionTransport(api_client)
        self._fence = fence
        self._budget = budget

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def call(self, action: str, method: str, path: str, **kwargs: Any) -> Body:
        return await self._sent(action, lambda: self._decoded(method, path, kwargs))

    async def read_keeping(self, action: str, path: str, keep: frozenset[str], **kwargs: Any) -> Body:
        """A GET decoded keeping only the keys in `keep` (decoded_keeping)."""

        async def fetch() -> Body:
            return decoded_keeping(await self._send("GET", path, kwargs), keep)

        return await self._sent(action, fetch)

    async def _decoded(self, method: str, path: str, kwargs: dict[str, Any]) -> Body:
        return decoded(await self._send(method, path, kwargs))

    def _send(
        self, method: str, path: str, kwargs: dict[str, Any], deadline: float | None = None
    ) -> Awaitable[bytes]:
        options = dict(kwargs)
        if "timeout" in options:  # RawApi's name for it; the transport's is `waits`
            options["waits"] = options.pop("timeout")
        return self._transport.send(method, path, deadline=deadline, **options)

    async def _sent(self, action: str, attempt: Callable[[], Awaitable[Body]]) -> Body:
        """`attempt` once the budget allows, again after each 429 (bounded); failures as KubeError.

        A 429 holds back the whole budget until its Retry-After has passed: the API server is
        shedding this operator's load, so every caller waits, not only the one told."""
        for retry in range(TOO_MANY_REQUESTS_RETRIES + 1):
            if self._budget is not None:
                await self._budget.wait()
            try:
                return await attempt()
            except KubeError:
                raise
            except ApiException as error:
                if error.status != 429 or retry == TOO_MANY_REQUESTS_RETRIES:
                    raise KubeError(action, int(error.status or 0), _status_reason(error)) from None
                delay = retry_after(error)
                if self._budget is not None:
                    self._budget.hold_off(delay)
                else:
                    await asyncio.sleep(delay)
            except (OSError, ValueError, HTTPError, aiohttp.ClientError) as error:
                # no connection, timed out, cut off
                raise KubeError(action, 0, type(error).__name__) from None
        raise AssertionError("unreachable: the last retry returns or raises")

    async def write(self, action: str, method: str, path: str, **kwargs: Any) -> Body:
        """A write, only while the fence allows it and never outliving the time it grants.

        The check is made right before the request leaves (after any wait for the budget or a
        Retry-After); a request already sent when leadership ends is cut off by its timeout,
        which the fence keeps shorter than the time before a standby may take over. The fence
        also learns of every write in flight: a cancelled caller does not stop the task
        sending it, and a clean hand-over waits for it. Replaces carry a resourceVersion, so a
        late one fails. A 429 was refused before it was served, so sending it again is safe."""
        return await self._sent(action, lambda: self._write_once(action, method, path, kwargs))

    async def _write_once(self, action: str, method: str, path: str, kwargs: dict[str, Any]) -> Body:
        granted = READ_TIMEOUT if self._fence is None else self._fence.write_budget()
        if granted is None:
            raise NotLeader(action)
        granted = min(granted, READ_TIMEOUT)
        timeout = (min(CONNECT_TIMEOUT, granted), granted)
        sending = asyncio.ensure_future(self._send(method, path, {**kwargs, "timeout": timeout}, granted))
        sending.add_done_callback(_retrieve)
        if self._fence is not None:
            self._fence.track(sending)
        try:
            return decoded(await asyncio.wait_for(asyncio.shield(sending), granted))
        except TimeoutError:
            raise KubeError(action, 0, "TimeoutError") from None


def refreshing_at_most_every(
    seconds: float, hook: Callable[[Any], None], clock: Callable[[], float] = time.monotonic
) -> Callable[[Any], None]:
    """The kubernetes client's credentials hook, run at most once per `seconds`.

    The loaders (kubeconfig and in-cluster alike) install a hook that the client runs before
    every request. It re-reads a token only when one is due (in a pod, the ServiceAccount token
    file a minute after the last read; from a kubeconfig, minutes before the token's expiry),
    but on every call it also sets the configuration's host again, and that setter reads the
    whole environment for proxies: 4 % of the operator's CPU in a first sync of 2,000
    credentials (py-spy). A second's delay cannot make a token late. Each run of the
    loader's hook installs a new one in the configuration: that one is called next time, and
    this wrapper put back. Two threads may both run it at a boundary, which is harmless."""
    inner, last = hook, None

    def refresh(configuration: Any) -> None:
        nonlocal inner, last
        now = clock()
        if last is not None and now - last < seconds:
            return
        last = now
        inner(configuration)
        installed = configuration.refresh_api_key_hook
        if installed is not refresh and installed is not None:
            inner = installed
            configuration.refresh_api_key_hook = refresh

    return refresh


def retry_after(error: ApiException) -> float:
    """The seconds a 429 asks us to wait (delta-seconds or an HTTP date), within 0..RETRY_AFTER_CAP."""
    value = str((error.headers or {}).get("Retry-After") or "").strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            seconds = RETRY_AFTER_DEFAULT
    if seconds != seconds:  # NaN
        seconds = RETRY_AFTER_DEFAULT
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def decoded(raw: bytes) -> Body:
    """An answer's JSON object."""
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("the API server answered with something other than a JSON object")
    return value


def decoded_keeping(raw: bytes, keep: frozenset[str]) -> Body:
    """A JSON object decoded keeping, in every object at any depth, only the keys in `keep`.

    Each object is filtered as soon as it is parsed, so a workload's megabyte of annotations,
    managedFields or env values never exists as Python objects beyond one value at a time;
    what is held at most is the response's bytes, their text and the kept fields."""

    def kept(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        return {key: value for key, value in pairs if key in keep}

    decoded = json.loads(raw, object_pairs_hook=kept)
    if not isinstance(decoded, dict):
        raise ValueError("the API server answered with something other than a JSON object")
    return decoded


def _status_reason(error: ApiException) -> str:
    """The API server's own Status message: it names the field or the conflict, never Secret data."""
    try:
        status = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        status = {}
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return str(status["message"])[:300]
    return str(error.reason or "")
