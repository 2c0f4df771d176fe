"""The reader: one LIST and then a watch on the namespace's Secrets, noting which token each one holds.

A watch, not a GET per Secret per second: the reader must not load the API server the contenders share.
Each event is timestamped when it arrives, which is when a workload reading the Secret could first see it.
It keeps only the token's expiry (read from the JWT, unverified) and whether a refresh token sits next to
it; the tokens themselves are never stored or printed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from benchmarks.child import BenchmarkError
from benchmarks.compare.kube import KubeTarget
from localenv.exposure import Sighting

TOKEN_KEY = "token"  # noqa: S105 - Secret keys, not secrets
REFRESH_TOKEN_KEY = "refresh_token"  # noqa: S105
WATCH_SECONDS = 60


def token_expiry(secret: Mapping[str, Any]) -> float | None:
    """The `exp` claim of the JWT in data.token, or None when there is no readable token."""
    encoded = (secret.get("data") or {}).get(TOKEN_KEY)
    if not encoded:
        return None
    try:
        token = base64.b64decode(encoded).decode()
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (binascii.Error, UnicodeDecodeError, IndexError, ValueError, KeyError, TypeError):
        return None


class SecretReader:
    """Watches Secrets in one namespace from a thread; `sightings()` is what it saw so far."""

    def __init__(self, target: KubeTarget, namespace: str, names: Sequence[str]) -> None:
        self._target = target
        self._path = f"/api/v1/namespaces/{namespace}/secrets"
        self._names = frozenset(names)
        self._lock = threading.Lock()
        self._sightings: list[Sighting] = []
        self._current: dict[str, float | None] = {}
        self._with_refresh_token: set[str] = set()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._client = target.client()
        self._thread = threading.Thread(target=self._run, name="secret-reader", daemon=True)

    def start(self) -> SecretReader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        deadline = time.monotonic() + 30
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._client.interrupt_watch()  # again, in case a new watch was opening the first time
            self._thread.join(timeout=1)
        self._client.close()

    def __enter__(self) -> SecretReader:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def sightings(self) -> list[Sighting]:
        self.check()
        with self._lock:
            return list(self._sightings)

    def holding_token(self) -> int:
        """How many of the expected Secrets hold a token now (expired or not)."""
        self.check()
        with self._lock:
            return sum(1 for expires_at in self._current.values() if expires_at is not None)

    def secrets_with_refresh_token(self) -> int:
        with self._lock:
            return len(self._with_refresh_token)

    def check(self) -> None:
        if self._error is not None:
            raise BenchmarkError(f"the Secret reader failed: {self._error}") from self._error

    def _run(self) -> None:
        try:
            resource_version = self._list()
            while not self._stopping.is_set():
                resource_version = self._watch(resource_version) or self._list()
        except Exception as error:  # closing the client mid-watch raises all sorts; only report real ones
            if not self._stopping.is_set():
                self._error = error

    def _list(self) -> str:
        listed = self._client.get(self._path)
        for item in listed.get("items") or []:
            self._note(item, deleted=False)
        return str(listed["metadata"]["resourceVersion"])

    def _watch(self, resource_version: str) -> str | None:
        """Follow the watch until it ends; returns where to resume, or None when a LIST is needed."""
        with contextlib.suppress(httpx.RemoteProtocolError, httpx.ReadError):  # the server ended it
            for event in self._client.watch(self._path, resource_version, WATCH_SECONDS):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    return None  # typically 410 Gone: the resource version is too old
                resource_version = str((obj.get("metadata") or {}).get("resourceVersion", resource_version))
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._note(obj, deleted=kind == "DELETED")
        return resource_version

    def _note(self, secret: Mapping[str, Any], deleted: bool) -> None:
        name = (secret.get("metadata") or {}).get("name")
        if name not in self._names:
            return
        now = time.time()
        expires_at = None if deleted else token_expiry(secret)
        with self._lock:
            if name in self._current and self._current[name] == expires_at:
                return  # an update that did not change the token (labels, status of the owner, ...)
            self._current[name] = expires_at
            self._sightings.append(Sighting(name, now, expires_at))
            if not deleted and REFRESH_TOKEN_KEY in (secret.get("data") or {}):
                self._with_refresh_token.add(name)
