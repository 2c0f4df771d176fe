"""Keeps one worker per credential, of either kind, and routes watch events to the workers they concern."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from simacan_token_operator.controller.kinds import Clusterwide, Kind, Namespaced
from simacan_token_operator.controller.runtime import Runtime
from simacan_token_operator.controller.worker import CredentialWorker
from simacan_token_operator.model.clusterspec import CLUSTER_KIND, NamespaceInfo
from simacan_token_operator.model.spec import REFRESH_REQUESTED_ANNOTATION, kept_annotations, watched_secrets

WorkerKey = tuple[str, str, str]
"""(kind, namespace, name); the namespace is empty for a cluster-scoped credential."""


def snapshot(body: Mapping[str, Any], with_status: bool) -> dict[str, Any]:
    """Only what a worker reads, not the whole object with its managedFields: kept per credential."""
    meta = body["metadata"]
    kept: dict[str, Any] = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            "name": meta["name"],
            "uid": meta.get("uid"),
            "generation": meta.get("generation"),
            "resourceVersion": meta.get("resourceVersion"),
            "annotations": kept_annotations(meta.get("annotations")),
        },
        "spec": body.get("spec"),
    }
    if meta.get("namespace"):
        kept["metadata"]["namespace"] = meta["namespace"]
    if with_status:  # read once, when a worker starts (e.g. after a restart)
        kept["status"] = body.get("status")
    return kept


def relevant(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What can change a worker's decision; status writes (our own echo) are not in it: the
    worker compares the status with what it wrote itself (reporting.StatusFence)."""
    meta = body.get("metadata") or {}
    return (
        meta.get("uid"),
        meta.get("generation"),
        (meta.get("annotations") or {}).get(REFRESH_REQUESTED_ANNOTATION),
        repr(body.get("spec")),
    )


def worker_key(body: Mapping[str, Any]) -> WorkerKey:
    meta = body["metadata"]
    return (str(body.get("kind")), meta.get("namespace") or "", meta["name"])


class Controller:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.workers: dict[WorkerKey, CredentialWorker] = {}
        self._by_secret: defaultdict[tuple[str, str], set[WorkerKey]] = defaultdict(set)
        """Namespaced credentials by the Secrets (in their namespace) whose changes concern them."""
        self._watched: dict[WorkerKey, frozenset[str]] = {}
        self._clusterwide: set[WorkerKey] = set()
        """Cluster-wide credentials: few, each asked whether a Secret event concerns it."""
        self.namespaces: dict[str, NamespaceInfo] = {}
        self.listed = asyncio.Event()
        """Set once the namespaces were listed: no cluster-wide worker acts on half a list."""

    async def observe(self, body: Mapping[str, Any]) -> None:
        """A credential of either kind was listed, added or modified."""
        key = worker_key(body)
        worker = self.workers.get(key)
        if worker is not None and worker.credential["metadata"].get("uid") != body["metadata"].get("uid"):
            await self.forget(*key)  # deleted and re-created between two events: start afresh
            worker = None
        if key[0] != CLUSTER_KIND:
            self._index(key, watched_secrets(key[2], key[1], body.get("spec") or {}))
        if worker is not None:
            changed = relevant(worker.credential) != relevant(body)
            worker.update(snapshot(body, with_status=False), body.get("status"))
            if changed:
                worker.nudge()
            return
        kind: Kind
        if key[0] == CLUSTER_KIND:
            kind = Clusterwide.from_status(body.get("status"))
            worker = CredentialWorker(
                snapshot(body, with_status=True), self.runtime, kind, self.namespaces, self.listed
            )
            self._clusterwide.add(key)
        else:
            worker = CredentialWorker(snapshot(body, with_status=True), self.runtime, Namespaced())
        self.workers[key] = worker
        worker.start()

    async def forget(self, kind: str, namespace: str, name: str) -> None:
        """The Secrets stay: their ownerReference lets the garbage collector remove them."""
        key = (kind, namespace, name)
        worker = self.workers.pop(key, None)
        self._index(key, frozenset())
        self._clusterwide.discard(key)
        if worker is not None:
            await worker.stop()

    def secret_changed(self, namespace: str, name: str) -> None:
        for key in self._by_secret.get((namespace, name), ()):
            worker = self.workers.get(key)
            if worker is not None:
                worker.nudge()
        for key in self._clusterwide:
            concern = self.workers[key].concerns(namespace, name)
            if concern is None:
                self.workers[key].nudge()
            elif concern:
                self.workers[key].nudge(namespace)

    def resync(self) -> None:
        """The Secret watch may have missed events: let every worker look again."""
        for worker in self.workers.values():
            worker.nudge()

    def namespaces_listed(self, view: Mapping[str, NamespaceInfo]) -> None:
        self.namespaces.clear()
        self.namespaces.update(view)
        self.listed.set()
        self._selection_changed()

    def namespace_changed(self, name: str, info: NamespaceInfo | None) -> None:
        if info is None:
            self.namespaces.pop(name, None)
        elif self.namespaces.get(name) == info:
            return
        else:
            self.namespaces[name] = info
        self._selection_changed()

    def _selection_changed(self) -> None:
        for key in self._clusterwide:
            self.workers[key].selection_changed()

    def overdue(self, now: float, margin: float) -> list[str]:
        """Workers whose planned run is more than `margin` seconds late: a sign of a stuck operator."""
        return [
            worker.key if key[0] != CLUSTER_KIND else f"cluster/{worker.key}"
            for key, worker in self.workers.items()
            if worker.due_at is not None and now > worker.due_at + margin
        ]

    async def stop(self) -> None:
        for key in list(self.workers):
            await self.forget(*key)

    def _index(self, key: WorkerKey, secrets: frozenset[str]) -> None:
        """Route events of these Secrets (in the credential's namespace) to the credential's worker."""
        namespace = key[1]
        for secret in self._watched.pop(key, frozenset()) - secrets:
            users = self._by_secret.get((namespace, secret))
            if users is not None:
                users.discard(key)
                if not users:
                    del self._by_secret[(namespace, secret)]
        for secret in secrets:
            self._by_secret[(namespace, secret)].add(key)
        if secrets:
            self._watched[key] = secrets
