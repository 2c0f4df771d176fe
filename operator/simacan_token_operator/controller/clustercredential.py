"""The loop around one ClusterSimacanCredential: one token Secret in every selected namespace.

Each namespace gets the ordinary pass (reconcile.py) on a namespaced view of the credential
(clusterspec.py) with a Memory of its own, so every guarantee of a SimacanCredential holds per
namespace: a foreign Secret is left alone, a tampered one restored, a restart makes no login.
All namespaces share one login through the token pool. Only the namespaces that need a look
run a pass: those whose Secret changed, whose refresh is due, or that just started matching;
a spec, credentials or selection change looks at all of them. A namespace that stops matching
loses our Secret (only ours). One status and folded Events go to the ClusterSimacanCredential.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from simacan_token_operator.controller.worker import (
    CONFLICT_RETRY_SECONDS,
    Runtime,
    WriteRefused,
    sleep_until,
    write_secret,
)
from simacan_token_operator.kube.client import Kube, KubeError, ObjectRef
from simacan_token_operator.model.clusterspec import (
    CLUSTER_KIND,
    ClusterSpec,
    NamespaceInfo,
    namespaced_view,
    parse_cluster_spec,
    relevant,
    snapshot,
)
from simacan_token_operator.model.schedule import backoff_delay, jitter_fraction
from simacan_token_operator.model.spec import CredentialSpec, SpecError, refresh_request
from simacan_token_operator.reconcile import credentials, tokensecret
from simacan_token_operator.reconcile.clusterstatus import (
    PENDING,
    aggregate,
    fold_events,
    render_cluster_status,
)
from simacan_token_operator.reconcile.decide import Gathered, Memory, reconcile, refused_write
from simacan_token_operator.reconcile.report import Note
from simacan_token_operator.reconcile.status import (
    Outcome,
    ReadyState,
    ready_reason,
    ready_state,
    status_digest,
)

logger = logging.getLogger(__name__)


class ClusterWorker:
    def __init__(
        self,
        credential: Mapping[str, Any],
        runtime: Runtime,
        kube: Kube,
        namespaces: Mapping[str, NamespaceInfo],
        listed: asyncio.Event,
    ) -> None:
        """`credential` as first seen, status included (after a restart it is what we remember)."""
        self.name: str = credential["metadata"]["name"]
        self.runtime, self.kube = runtime, kube
        self._namespaces, self._listed = namespaces, listed
        status = credential.get("status") or {}
        self.credential: Mapping[str, Any] = {k: v for k, v in credential.items() if k != "status"}
        request = status.get("lastRefreshRequest")
        self._handled_request: str | None = request if isinstance(request, str) else None
        self._request_seen: tuple[str, float] | None = None
        """A refresh request and when it was first seen: one moment for all namespaces, so that
        the one new token satisfies them all (a later moment per namespace would ask again)."""
        self._status_digest: str | None = status_digest(status) if status else None
        self._ready: ReadyState | None = ready_state(status)
        self._last_reason: str | None = ready_reason(status)
        self._memories: dict[str, Memory] = {}
        self._outcomes: dict[str, Outcome] = {}
        self._due: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._holding: set[str] | None = None
        """Namespaces where our Secret may exist; listed by label once, then kept."""
        self._dirty: set[str] | None = None
        """Namespaces to look at on the next pass; None: all selected."""
        self.selected: frozenset[str] = frozenset()
        self.spec: ClusterSpec | None = None
        self.due_at: float | None = None
        """When this worker should next run; /healthz flags it if it is long overdue."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- control ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(
            self._run(), name=f"cluster-credential:{self.name}", context=contextvars.Context()
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for namespace in self._memories:
            self.runtime.pool.detach(self._pool_key(namespace))
        self.runtime.metrics.forget("", self.name)

    def update(self, credential: Mapping[str, Any]) -> None:
        changed = relevant(self.credential) != relevant(credential)
        self.credential = credential
        if changed:
            self.nudge()

    def nudge(self, namespace: str | None = None) -> None:
        """Look again at one namespace, or (None) at all of them."""
        if namespace is None:
            self._dirty = None
        elif self._dirty is not None:
            self._dirty.add(namespace)
        self._wake.set()

    def selection_changed(self) -> None:
        """The namespaces or their labels changed: the next pass compares the selection and looks
        at newcomers only."""
        self._wake.set()

    def concerns(self, namespace: str, secret: str) -> bool | None:
        """True: our token Secret there; None: the credentials Secret (all namespaces); False: neither."""
        spec = self.spec
        if spec is None:
            return False
        if (namespace, secret) == (spec.credentials_namespace, spec.credentials_secret):
            return None
        return secret == spec.secret_name and namespace in self.selected

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        await self._listed.wait()
        failures = 0
        while True:
            self._wake.clear()
            try:
                wake_at = await self.run_once()
                failures = 0
            except Exception as error:
                failures += 1
                delay = backoff_delay(failures, jitter_fraction(f"{self.name}:{failures}"))
                if isinstance(error, KubeError):
                    logger.warning("%s: %s; retrying in %.0fs", self.name, error, delay)
                else:
                    logger.exception("%s: unexpected error; retrying in %.0fs", self.name, delay)
                self._dirty = None
                wake_at = self.runtime.clock() + delay
            self.due_at = wake_at
            await sleep_until(self._wake, wake_at, self.runtime.clock)

    async def run_once(self) -> float | None:
        """One round over the namespaces that need it; returns when to look again."""
        runtime = self.runtime
        dirty, self._dirty = self._dirty, set()
        request = refresh_request(self.credential["metadata"].get("annotations"))
        if request is None:
            self._request_seen = None
        elif self._request_seen is None or self._request_seen[0] != request:
            self._request_seen = (request, runtime.clock())
        try:
            spec = parse_cluster_spec(self.name, self.credential.get("spec") or {})
        except SpecError as error:
            self.spec = None
            failed = Outcome(False, error.reason, error.message, failure=True)
            changed = error.reason != self._last_reason
            await self._report(failed, [Note("Warning", error.reason, error.message)] if changed else [])
            return None
        self.spec, previous = spec, self.selected
        self.selected = spec.select(self._namespaces)
        await self._release(spec)
        now = runtime.clock()
        todo = sorted(
            self.selected
            if dirty is None
            else (dirty & self.selected)
            | (self.selected - previous)
            | {ns for ns, due in self._due.items() if due <= now}
        )
        secret: Mapping[str, Any] | None = None
        problem: SpecError | None = None
        if todo:
            async with runtime.kube_gate:
                secret = await self.kube.read_secret(spec.credentials_namespace, spec.credentials_secret)
            problem = _credentials_problem(spec, self.credential, secret)
        results = await asyncio.gather(*(self._namespace_pass(ns, secret, problem) for ns in todo))
        notes = [(ns, note) for ns, result in zip(todo, results, strict=True) for note in result]
        outcomes = {ns: self._outcomes.get(ns, PENDING) for ns in self.selected}
        await self._report(aggregate(outcomes), fold_events(notes), outcomes)
        pending = [self._due[ns] for ns in self.selected if ns in self._due]
        return min(pending) if pending else None

    def _reworded(self, reason: str, message: str, problem: SpecError | None) -> str:
        """The pass speaks of a SimacanCredential and of the credentials Secret in the target
        namespace; say which object and where the Secret really is."""
        if problem is not None and reason == problem.reason:
            return problem.message
        return message.replace("this SimacanCredential", f"{CLUSTER_KIND} {self.name}")

    async def _namespace_pass(
        self, namespace: str, secret: Mapping[str, Any] | None, problem: SpecError | None
    ) -> tuple[Note, ...]:
        """Gather, decide, write for one namespace; its Events are returned to be folded."""
        runtime = self.runtime
        view = namespaced_view(self.credential, namespace)
        memory = self._memories.get(namespace) or Memory(handled_request=self._handled_request)
        request = self._request_seen
        pending = memory.pending_request
        if request is not None and request[0] not in (memory.handled_request, pending and pending[0]):
            memory = dataclasses.replace(memory, pending_request=request)
        try:
            async with runtime.kube_gate:
                target = await self.kube.read_secret(namespace, self.spec.secret_name if self.spec else "")
            gathered = Gathered(view, target, secret, memory, runtime.clock())
            result = await reconcile(gathered, runtime.services)
            async with runtime.kube_gate:
                try:
                    written = await write_secret(self.kube, namespace, result, self.name)
                except WriteRefused as refused:
                    logger.warning("%s: %s", self.name, refused.message)
                    result = refused_write(gathered, result, refused.message)
                    written = True
        except KubeError as error:
            if namespace not in self._outcomes:
                self._outcomes[namespace] = dataclasses.replace(
                    PENDING, message=f"{PENDING.message}: {error}"
                )
            failures = self._failures[namespace] = self._failures.get(namespace, 0) + 1
            delay = backoff_delay(failures, jitter_fraction(f"{self.name}:{namespace}:{failures}"))
            logger.warning("%s: namespace %s: %s; retrying in %.0fs", self.name, namespace, error, delay)
            self._due[namespace] = runtime.clock() + delay
            return ()
        self._failures.pop(namespace, None)
        if not written:
            self._due[namespace] = runtime.clock() + CONFLICT_RETRY_SECONDS
            return ()
        self._memories[namespace] = result.memory
        outcome = result.outcome
        self._outcomes[namespace] = dataclasses.replace(
            outcome, message=self._reworded(outcome.reason, outcome.message, problem)
        )
        if result.write is not None:
            self._holding = (self._holding or set()) | {namespace}
        if result.requeue_at is None:
            self._due.pop(namespace, None)
        else:
            self._due[namespace] = result.requeue_at
        if result.attempt is not None:
            runtime.metrics.count_attempt(result.attempt)
        return tuple(
            dataclasses.replace(note, message=self._reworded(note.reason, note.message, problem))
            for note in result.events
        )

    async def _release(self, spec: ClusterSpec) -> None:
        """Forget namespaces that stopped matching, and delete our Secret there (only if ours)."""
        uid = self.credential["metadata"]["uid"]
        if self._holding is None:
            async with self.runtime.kube_gate:
                self._holding = await self.kube.namespaces_holding(uid)
        for namespace in set(self._memories) - self.selected:
            self.runtime.pool.detach(self._pool_key(namespace))
        self._memories = {ns: m for ns, m in self._memories.items() if ns in self.selected}
        self._outcomes = {ns: o for ns, o in self._outcomes.items() if ns in self.selected}
        self._due = {ns: t for ns, t in self._due.items() if ns in self.selected}
        self._failures = {ns: n for ns, n in self._failures.items() if ns in self.selected}
        for namespace in sorted(self._holding - self.selected):
            if namespace in self._namespaces:  # a deleted namespace takes its Secrets along
                async with self.runtime.kube_gate:
                    secret = await self.kube.read_secret(namespace, spec.secret_name)
                    if secret is not None and tokensecret.owned_by(secret, uid):
                        await self.kube.delete_secret(namespace, spec.secret_name, secret["metadata"]["uid"])
                        logger.info(
                            "%s: deleted Secret %s/%s (namespace no longer selected)",
                            self.name,
                            namespace,
                            spec.secret_name,
                        )
            self._holding.discard(namespace)

    async def _report(
        self, overall: Outcome, events: list[Note], outcomes: Mapping[str, Outcome] | None = None
    ) -> None:
        """Post the Events, patch the status if it changed, publish the metrics."""
        meta = self.credential["metadata"]
        handled = {self._memories[ns].handled_request for ns in self.selected if ns in self._memories}
        if len(handled) == 1 and len(self._memories) == len(self.selected):
            self._handled_request = handled.pop()
        status = render_cluster_status(
            overall,
            outcomes or {},
            secret_name=self.spec.secret_name if self.spec else None,
            generation=meta.get("generation"),
            handled_request=self._handled_request,
            previous=self._ready,
            now=self.runtime.clock(),
        )
        for note in events:
            await self._post(note)
        digest = status_digest(status)
        if digest != self._status_digest:
            try:
                async with self.runtime.kube_gate:
                    await self.kube.patch_cluster_status(self.name, status)
            except KubeError as error:
                if error.status != 404:  # deleted meanwhile; the watch will stop us
                    raise
            self._status_digest = digest
            self._ready = ready_state(status)
        self._last_reason = overall.reason
        self.runtime.metrics.publish("", self.name, overall, None)

    async def _post(self, note: Note) -> None:
        meta = self.credential["metadata"]
        ref = ObjectRef("", self.name, meta["uid"], str(self.credential.get("apiVersion")), CLUSTER_KIND)
        try:
            async with self.runtime.kube_gate:
                await self.kube.post_event(ref, note.type, note.reason, note.message)
        except KubeError as error:
            logger.warning("%s: could not post Event %s: %s", self.name, note.reason, error)

    def _pool_key(self, namespace: str) -> str:
        """As reconcile.pool_user names this credential's view of `namespace`."""
        return f"{CLUSTER_KIND}:{namespace}/{self.name}"


def _credentials_problem(
    spec: ClusterSpec, credential: Mapping[str, Any], secret: Mapping[str, Any] | None
) -> SpecError | None:
    """The credentials Secret's problem, named with the namespace it really lives in."""
    view = namespaced_view(credential, spec.credentials_namespace)["spec"]["credentialsSecretRef"]
    where = CredentialSpec(
        name=spec.secret_name,
        namespace=spec.credentials_namespace,
        credentials_secret=spec.credentials_secret,
        username_key=str(view.get("usernameKey") or "username"),
        password_key=str(view.get("passwordKey") or "password"),
    )
    try:
        credentials.login_source(where, secret)
    except SpecError as error:
        return error
    return None


class ClusterController:
    """One worker per ClusterSimacanCredential; namespace and Secret events routed to them."""

    def __init__(self, runtime: Runtime, kube: Kube) -> None:
        self.runtime, self.kube = runtime, kube
        self.workers: dict[str, ClusterWorker] = {}
        self.namespaces: dict[str, NamespaceInfo] = {}
        self.listed = asyncio.Event()
        """Set once the namespaces were listed: no worker acts on half a list."""

    async def observe(self, body: Mapping[str, Any]) -> None:
        name = body["metadata"]["name"]
        worker = self.workers.get(name)
        if worker is not None and worker.credential["metadata"].get("uid") != body["metadata"].get("uid"):
            await self.forget(name)
            worker = None
        if worker is not None:
            worker.update(snapshot(body, with_status=False))
        else:
            worker = ClusterWorker(
                snapshot(body, with_status=True), self.runtime, self.kube, self.namespaces, self.listed
            )
            self.workers[name] = worker
            worker.start()

    async def forget(self, name: str) -> None:
        """The Secrets stay: their ownerReference lets the garbage collector remove them."""
        worker = self.workers.pop(name, None)
        if worker is not None:
            await worker.stop()

    def namespaces_listed(self, view: dict[str, NamespaceInfo]) -> None:
        self.namespaces.clear()
        self.namespaces.update(view)
        self.listed.set()
        for worker in self.workers.values():
            worker.selection_changed()

    def namespace_changed(self, name: str, info: NamespaceInfo | None) -> None:
        if info is None:
            self.namespaces.pop(name, None)
        elif self.namespaces.get(name) == info:
            return
        else:
            self.namespaces[name] = info
        for worker in self.workers.values():
            worker.selection_changed()

    def secret_changed(self, namespace: str, name: str) -> None:
        for worker in self.workers.values():
            concern = worker.concerns(namespace, name)
            if concern is None:
                worker.nudge()
            elif concern:
                worker.nudge(namespace)

    def resync(self) -> None:
        for worker in self.workers.values():
            worker.nudge()

    def overdue(self, now: float, margin: float) -> list[str]:
        """Workers whose planned run is more than `margin` seconds late (for /healthz)."""
        late = self.workers.values()
        return [f"cluster/{w.name}" for w in late if w.due_at is not None and now > w.due_at + margin]

    async def stop(self) -> None:
        for name in list(self.workers):
            await self.forget(name)
