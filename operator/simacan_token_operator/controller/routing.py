"""Keeps one worker per SimacanCredential and routes watch events to the workers they concern."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from simacan_token_operator.controller.worker import CredentialWorker, Runtime
from simacan_token_operator.model.spec import REFRESH_REQUESTED_ANNOTATION, kept_annotations, watched_secrets


def _snapshot(body: Mapping[str, Any], with_status: bool) -> dict[str, Any]:
    """Only what a worker reads, not the whole object with its managedFields: kept per credential."""
    meta = body["metadata"]
    snapshot: dict[str, Any] = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "generation": meta.get("generation"),
            "annotations": kept_annotations(meta.get("annotations")),
        },
        "spec": body.get("spec"),
    }
    if with_status:  # read once, when a worker starts (e.g. after a restart)
        snapshot["status"] = body.get("status")
    return snapshot


def _relevant(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What can change a worker's decision; status writes (our own echo) are not in it."""
    meta = body.get("metadata") or {}
    return (
        meta.get("uid"),
        meta.get("generation"),
        (meta.get("annotations") or {}).get(REFRESH_REQUESTED_ANNOTATION),
        repr(body.get("spec")),
    )


class Controller:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.workers: dict[tuple[str, str], CredentialWorker] = {}
        self._by_secret: defaultdict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
        self._watched: dict[tuple[str, str], frozenset[str]] = {}
        self.also_on_secret: list[Callable[[str, str], None]] = []
        """Other consumers of Secret events (the ClusterSimacanCredential controller)."""
        self.also_on_resync: list[Callable[[], None]] = []
        self.also_overdue: list[Callable[[float, float], list[str]]] = []

    async def observe(self, body: Mapping[str, Any]) -> None:
        """A SimacanCredential was listed, added or modified."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        worker = self.workers.get(key)
        if worker is not None and worker.credential["metadata"].get("uid") != meta.get("uid"):
            await self.forget(*key)  # deleted and re-created between two events: start afresh
            worker = None
        self._index(key, watched_secrets(meta["name"], meta["namespace"], body.get("spec") or {}))
        if worker is not None:
            changed = _relevant(worker.credential) != _relevant(body)
            worker.update(_snapshot(body, with_status=False))
            if changed:
                worker.nudge()
        else:
            worker = CredentialWorker(_snapshot(body, with_status=True), self.runtime)
            self.workers[key] = worker
            worker.start()

    async def forget(self, namespace: str, name: str) -> None:
        worker = self.workers.pop((namespace, name), None)
        self._index((namespace, name), frozenset())
        if worker is not None:
            await worker.stop()

    def secret_changed(self, namespace: str, name: str) -> None:
        for key in self._by_secret.get((namespace, name), ()):
            worker = self.workers.get(key)
            if worker is not None:
                worker.nudge()
        for listener in self.also_on_secret:
            listener(namespace, name)

    def resync(self) -> None:
        """The Secret watch may have missed events: let every worker look again."""
        for worker in self.workers.values():
            worker.nudge()
        for resync in self.also_on_resync:
            resync()

    def overdue(self, now: float, margin: float) -> list[str]:
        """Workers whose planned run is more than `margin` seconds late: a sign of a stuck operator."""
        late = [w.key for w in self.workers.values() if w.due_at is not None and now > w.due_at + margin]
        return late + [key for overdue in self.also_overdue for key in overdue(now, margin)]

    async def stop(self) -> None:
        for key in list(self.workers):
            await self.forget(*key)

    def _index(self, key: tuple[str, str], secrets: frozenset[str]) -> None:
        """Route events of these Secrets (in the credential's namespace) to the credential's worker."""
        namespace = key[0]
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
