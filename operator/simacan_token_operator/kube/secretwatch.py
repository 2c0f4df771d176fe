"""Notice Secret changes without holding Secrets: a metadata-only watch, as cert-manager does.

kopf keeps a memory per watched object, so watching every Secret of a cluster through it
would cost memory per Secret and stream every Secret's data into this process. This watch
asks the API server for metadata only (PartialObjectMetadata) and keeps nothing but a
resourceVersion. A thread per watched namespace (one in all for --all-namespaces) reads the
stream; events go to the event loop as (namespace, name). A watch that stays silent past the
read timeout (deadlines.py) is treated as dead: the thread lists again and every worker
looks again, since events may have been missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from simacan_token_operator.kube.client import RawApi
from simacan_token_operator.kube.deadlines import CONNECT_TIMEOUT, WATCH_READ_TIMEOUT, WATCH_SERVER_TIMEOUT

logger = logging.getLogger(__name__)

METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
"""For watch events; a list needs the List kind (the API server answers 406 otherwise)."""
METADATA_ONLY_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
RETRY_SECONDS = (0.5, 1.0, 2.0)
"""Short: the resync after an API server outage waits for this, and a list is cheap."""


class Gone(Exception):
    """The resourceVersion is too old (HTTP 410): list again."""


def watch_events(response: Any, stopping: threading.Event) -> Iterator[dict[str, Any]]:
    """The events of one watch response, until it ends or `stopping` is set. An ERROR event
    raises: Gone for 410, ValueError otherwise."""
    for line in response:
        if stopping.is_set():
            return
        if not line.strip():
            continue
        event = json.loads(line)
        if event.get("type") == "ERROR":
            obj = event.get("object") or {}
            if obj.get("code") == 410:
                raise Gone
            raise ValueError(f"watch error {obj.get('code')}: {obj.get('reason')}")
        yield event


class SecretWatch:
    def __init__(
        self,
        api_client: Any,
        namespaces: Sequence[str],
        on_change: Callable[[str, str], None],
        on_resync: Callable[[], None],
        read_timeout: float = WATCH_READ_TIMEOUT,
    ) -> None:
        """`namespaces` empty means all namespaces. Callbacks run on the event loop."""
        self._api = RawApi(api_client)
        self._read_timeout = read_timeout
        self._namespaces: Sequence[str | None] = list(namespaces) or [None]
        self._on_change = on_change
        self._on_resync = on_resync
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._responses: dict[str | None, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for namespace in self._namespaces:
            thread = threading.Thread(
                target=self._run, args=(namespace,), name=f"secret-watch:{namespace or '*'}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    async def stop(self) -> None:
        self._stopping.set()
        for response in list(self._responses.values()):
            response.shutdown()  # unblocks a read in progress
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 5)

    def _run(self, namespace: str | None) -> None:
        failures = 0
        version: str | None = None
        missed = False
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._current_version(namespace)
                    if missed:  # events may have been missed while we were away
                        missed = False
                        self._post(self._on_resync)
                version = self._follow(namespace, version)
                failures = 0
            except Gone:
                version, missed = None, True
            except (ApiException, HTTPError, OSError, ValueError) as error:
                if self._stopping.is_set():
                    return
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                version, missed = None, True
                logger.warning(
                    "watching Secrets in %s failed (%s); retrying in %.0fs",
                    namespace or "all namespaces",
                    type(error).__name__,
                    delay,
                )
                self._stopping.wait(delay)

    @staticmethod
    def _path(namespace: str | None) -> str:
        return "/api/v1/secrets" if namespace is None else f"/api/v1/namespaces/{namespace}/secrets"

    def _current_version(self, namespace: str | None) -> str:
        listed = self._api.json("GET", self._path(namespace), query={"limit": 1}, accept=METADATA_ONLY_LIST)
        return str(listed["metadata"]["resourceVersion"])

    def _follow(self, namespace: str | None, version: str) -> str:
        """Read one watch request to its end; return the last resourceVersion seen."""
        response = self._api.request(
            "GET",
            self._path(namespace),
            query={
                "watch": "true",
                "resourceVersion": version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": WATCH_SERVER_TIMEOUT,
            },
            accept=METADATA_ONLY,
            # Bookmarks arrive at least once a minute: a longer silence is a dead connection.
            timeout=(CONNECT_TIMEOUT, self._read_timeout),
        ).response
        self._responses[namespace] = response
        try:
            for event in watch_events(response, self._stopping):
                meta = (event.get("object") or {}).get("metadata") or {}
                version = str(meta.get("resourceVersion") or version)
                if event.get("type") != "BOOKMARK":
                    self._post(self._on_change, str(meta.get("namespace")), str(meta.get("name")))
        finally:
            self._responses.pop(namespace, None)
            response.release_conn()
        return version

    def _post(self, callback: Callable[..., None], *args: str) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)
