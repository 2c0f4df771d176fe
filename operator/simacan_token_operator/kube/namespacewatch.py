"""Namespaces' labels and deletion state, kept current by a metadata-only list and watch.

A ClusterSimacanCredential selects namespaces by label: a namespace that starts or stops
matching must be noticed within seconds, without polling. Like secretwatch.py, a thread reads
the stream (PartialObjectMetadata: labels and deletionTimestamp are all we need) and hands
changes to the event loop. A full list comes first, and again after any break, so that the
consumer always replaces its whole view with a complete one (`on_listed`) before it gets
single changes (`on_change`): a namespace deleted during a break cannot linger.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from simacan_token_operator.kube.client import RawApi
from simacan_token_operator.kube.deadlines import CONNECT_TIMEOUT, WATCH_READ_TIMEOUT, WATCH_SERVER_TIMEOUT
from simacan_token_operator.kube.secretwatch import (
    METADATA_ONLY,
    METADATA_ONLY_LIST,
    RETRY_SECONDS,
    Gone,
    watch_events,
)
from simacan_token_operator.model.clusterspec import NamespaceInfo, namespace_info

logger = logging.getLogger(__name__)

PATH = "/api/v1/namespaces"


class NamespaceWatch:
    def __init__(
        self,
        api_client: Any,
        on_listed: Callable[[dict[str, NamespaceInfo]], None],
        on_change: Callable[[str, NamespaceInfo | None], None],
    ) -> None:
        """Callbacks run on the event loop; `on_change` gets None for a deleted namespace."""
        self._api = RawApi(api_client)
        self._on_listed = on_listed
        self._on_change = on_change
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="namespace-watch", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stopping.set()
        response = self._response
        if response is not None:
            response.shutdown()  # unblocks a read in progress
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)

    def _run(self) -> None:
        failures = 0
        version: str | None = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._follow(version)
                failures = 0
            except Gone:
                version = None
            except (ApiException, HTTPError, OSError, ValueError, KeyError) as error:
                if self._stopping.is_set():
                    return
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                version = None
                logger.warning(
                    "watching namespaces failed (%s); retrying in %.0fs", type(error).__name__, delay
                )
                self._stopping.wait(delay)

    def _list(self) -> str:
        listed = self._api.json("GET", PATH, accept=METADATA_ONLY_LIST)
        view = {
            str(item["metadata"]["name"]): namespace_info(item)
            for item in listed.get("items") or []
            if isinstance(item, Mapping)
        }
        self._post(self._on_listed, view)
        return str(listed["metadata"]["resourceVersion"])

    def _follow(self, version: str) -> str:
        """Read one watch request to its end; return the last resourceVersion seen."""
        response = self._api.request(
            "GET",
            PATH,
            query={
                "watch": "true",
                "resourceVersion": version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": WATCH_SERVER_TIMEOUT,
            },
            accept=METADATA_ONLY,
            timeout=(CONNECT_TIMEOUT, WATCH_READ_TIMEOUT),  # bookmarks come at least once a minute
        ).response
        self._response = response
        try:
            for event in watch_events(response, self._stopping):
                obj = event.get("object") or {}
                kind = event.get("type")
                meta = obj.get("metadata") or {}
                version = str(meta.get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED"):
                    self._post(self._on_change, str(meta["name"]), namespace_info(obj))
                elif kind == "DELETED":
                    self._post(self._on_change, str(meta["name"]), None)
        finally:
            self._response = None
            response.release_conn()
        return version

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)
