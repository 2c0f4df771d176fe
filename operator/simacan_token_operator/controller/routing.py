"""Keeps one worker per credential, of either kind, and routes watch events to the workers they concern."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Collection, Mapping
from typing import Any

from simacan_token_operator.controller.kinds import NAMESPACED, Clusterwide, Kind
from simacan_token_operator.controller.known import Versions, in_scope
from simacan_token_operator.controller.runtime import Runtime
from simacan_token_operator.controller.worker import CredentialWorker
from simacan_token_operator.model.clusterspec import CLUSTER_KIND, NamespaceInfo
from simacan_token_operator.model.spec import REFRESH_REQUESTED_ANNOTATION, kept_annotations, watched_secrets

logger = logging.getLogger(__name__)

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


class SecretRoutes:
    """Namespaced credentials by the Secrets (in their namespace) whose changes concern them.

    Most Secrets concern one credential (its token Secret): that one is kept as it is, not in
    a set of one (216 bytes per credential); a credentials Secret that several share has a set."""

    __slots__ = ("_by_secret", "_watched")

    def __init__(self) -> None:
        self._by_secret: dict[tuple[str, str], WorkerKey | set[WorkerKey]] = {}
        self._watched: dict[WorkerKey, tuple[str, ...]] = {}

    def users(self, namespace: str, secret: str) -> Collection[WorkerKey]:
        """Not a copy: routing an event only nudges workers, which changes no route."""
        users = self._by_secret.get((namespace, secret))
        if users is None:
            return ()
        return users if isinstance(users, set) else (users,)

    def index(self, key: WorkerKey, secrets: tuple[str, ...]) -> None:
        """Route events of these Secrets (in the credential's namespace) to the credential's worker."""
        namespace = key[1]
        for secret in self._watched.pop(key, ()):
            if secret not in secrets:
                self._remove((namespace, secret), key)
        for secret in secrets:
            self._add((namespace, secret), key)
        if secrets:
            self._watched[key] = secrets

    def _add(self, where: tuple[str, str], key: WorkerKey) -> None:
        users = self._by_secret.get(where)
        if users is None:
            self._by_secret[where] = key
        elif isinstance(users, set):
            users.add(key)
        elif users != key:
            self._by_secret[where] = {users, key}

    def _remove(self, where: tuple[str, str], key: WorkerKey) -> None:
        users = self._by_secret.get(where)
        if users == key:
            del self._by_secret[where]
        elif isinstance(users, set):
            users.discard(key)
            if len(users) == 1:
                self._by_secret[where] = users.pop()


class Controller:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.workers: dict[WorkerKey, CredentialWorker] = {}
        self._routes = SecretRoutes()
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
            self._routes.index(key, watched_secrets(key[2], key[1], body.get("spec") or {}))
        if worker is not None:
            if relevant(worker.credential) == relevant(body):
                # Mostly the echo of our own status patch: the snapshot kept would be the same
                # but for the version. Keeping it lets the event's spec go with the event, not
                # stay behind, one per credential per wave, among the parsed events' garbage.
                worker.observed(body["metadata"].get("resourceVersion"), body.get("status"))
                return
            worker.update(snapshot(body, with_status=False), body.get("status"))
            worker.nudge()
            return
        kind: Kind
        if key[0] == CLUSTER_KIND:
            kind = Clusterwide.from_status(body.get("status"), self.runtime.cluster_credentials_namespace)
            worker = CredentialWorker(
                snapshot(body, with_status=True), self.runtime, kind, self.namespaces, self.listed
            )
            self._clusterwide.add(key)
        else:
            worker = CredentialWorker(snapshot(body, with_status=True), self.runtime, NAMESPACED)
            if not self.runtime.start_gate.is_open:
                self._survey_while_held(worker)
        self.workers[key] = worker
        worker.start()
        self.runtime.start_gate.arrived(key)

    async def forget(self, kind: str, namespace: str, name: str) -> None:
        """The Secrets stay: their ownerReference lets the garbage collector remove them."""
        key = (kind, namespace, name)
        self.runtime.start_gate.arrived(key)  # deleted: nothing more to wait for
        await self._drop(key)

    async def _drop(self, key: WorkerKey) -> None:
        worker = self.workers.pop(key, None)
        self._routes.index(key, ())
        self._clusterwide.discard(key)
        if worker is not None:
            await worker.stop()
            if worker.kind.namespaced:  # it may have been surveyed before its first pass
                assert self.runtime.workloads is not None
                self.runtime.workloads.release(worker.namespace, worker.key)

    def _survey_while_held(self, worker: CredentialWorker) -> None:
        """While the workers are held at start (startgate.py), survey the credential's namespace
        for the stale-consumer check, so that the wave's statuses carry it the first time. A
        survey that came after the passes would wake each of the namespace's credentials for a
        second status patch (2,000 more in a first sync of 2,000 in one namespace)."""
        assert self.runtime.workloads is not None
        self.runtime.workloads.survey(
            worker.namespace, worker.key, functools.partial(worker.nudge, worker.namespace)
        )

    def secret_changed(
        self, namespace: str, name: str, version: str | None = None, owner: str | None = None
    ) -> None:
        """The Secret watch reported `version` of a Secret ("" deleted; None: unknown, look again).
        The version this process itself wrote or read wakes nobody (known.py). `owner`: the
        Secret's cluster-credential owner label, if it has one."""
        self.runtime.known.present.seen(namespace, name, version)
        login_news = self.runtime.known.logins.seen(namespace, name, version)
        for key in self._routes.users(namespace, name):
            worker = self.workers.get(key)
            if worker is not None:
                route_secret_event(worker, namespace, name, version, login_news, owner)
        for key in self._clusterwide:
            if concerns(self.workers[key], namespace, name, owner) is not False:
                route_secret_event(self.workers[key], namespace, name, version, login_news, owner)

    def secrets_listed(self, scope: str | None, versions: Versions, after_break: bool) -> None:
        """The Secret watch listed `scope` (None: all namespaces): every Secret's version. From its
        first list on, its events vouch for what passes read and for which Secrets exist; after a
        gap in the watch, what changed meanwhile is looked at again, then everything."""
        known = self.runtime.known
        known.epochs.listed(scope)
        known.present.listed(scope, versions)
        if not after_break:
            return
        known.logins.relisted(scope, versions)
        for worker in self.workers.values():
            route_relisted(worker, scope, versions)
        logger.info(
            "Secrets in %s listed again after a gap in the watch (%d); every credential looks again",
            scope or "all namespaces",
            len(versions),
        )
        self.resync()

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
            await self._drop(key)
        await self.runtime.news.stop()


def route_secret_event(
    worker: CredentialWorker,
    namespace: str,
    secret: str,
    version: str | None,
    login_news: bool,
    owner: str | None = None,
) -> None:
    """The Secret watch reported `version` of a Secret routed here ("" deleted, None unknown).
    `login_news`: whether that is news of a credentials Secret (not the version read)."""
    concern = concerns(worker, namespace, secret, owner)
    if concern is None:
        if login_news:
            worker.nudge()
    elif concern:
        target = worker.targets.get(namespace)
        if target is None or target.watched.event(version):
            worker.nudge(namespace)
    elif worker.kind.namespaced:  # not served yet (no scope): look
        worker.nudge()


def route_relisted(worker: CredentialWorker, scope: str | None, versions: Versions) -> None:
    """After a gap in the Secret watch of `scope` (None: all namespaces): look again at the
    targets whose Secret changed meanwhile."""
    epochs = worker.runtime.known.epochs
    for namespace, target in list(worker.targets.items()):
        if in_scope(namespace, scope) and target.watched.relisted(versions, epochs.of(namespace)):
            worker.nudge(namespace)


def concerns(worker: CredentialWorker, namespace: str, secret: str, owner: str | None = None) -> bool | None:
    """True: a target's token Secret, or one labelled as ours (`owner`) outside the selection
    (a create that landed late: to delete); None: the credentials Secret; False: neither."""
    scope = worker.scope
    if scope is None or secret not in (scope.secret_name, scope.credentials_secret):
        return False
    if (namespace, secret) == (scope.credentials_namespace, scope.credentials_secret):
        return None
    uid = worker.credential["metadata"]["uid"]
    ours = not worker.kind.namespaced and owner is not None and owner == uid
    return secret == scope.secret_name and (namespace in worker.selected or ours)
