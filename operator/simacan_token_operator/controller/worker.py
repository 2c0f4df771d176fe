"""The loop around one credential of either kind: run its targets' passes, report, sleep.

Each round of a credential is an asyncio task. Between rounds the credential sleeps as a flag
and a timer (gates.Wake) until a target's next refresh, a retry, or a nudge from a watch event:
no task, so thousands of sleeping credentials cost a few hundred bytes each. A round
looks only at the targets that need it: those whose Secret changed, whose refresh is due, or that
just became targets; a change of the credential or its credentials Secret looks at all of them.
The credentials Secret is read once per round, whatever the number of targets; all targets
share one login through the token pool. The kind (kinds.py) says which targets there are and
how their outcomes are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from simacan_token_operator.controller.gates import PASS, Wake
from simacan_token_operator.controller.holdings import Holdings
from simacan_token_operator.controller.kinds import Kind, Round, Scope
from simacan_token_operator.controller.reporting import Reporter, StatusFence, unwritten
from simacan_token_operator.controller.runtime import Runtime
from simacan_token_operator.controller.target import Concluded, LoginRead, Target, only_keys
from simacan_token_operator.kube.client import KubeError
from simacan_token_operator.model.clusterspec import NamespaceInfo
from simacan_token_operator.model.schedule import backoff_delay, jitter_fraction
from simacan_token_operator.model.spec import SpecError, refresh_request
from simacan_token_operator.reconcile.clusterstatus import PENDING
from simacan_token_operator.reconcile.decide import Memory, pool_user
from simacan_token_operator.reconcile.report import Note

logger = logging.getLogger(__name__)
NO_NAMESPACES: Mapping[str, NamespaceInfo] = {}
NOTHING: frozenset[str] = frozenset()
"""No target to look at: shared, so thousands of idle workers keep no empty set each."""


def request_seen(
    previous: tuple[str, float] | None, annotations: Mapping[str, Any] | None, now: float
) -> tuple[str, float] | None:
    """The refresh request the credential makes, and the moment it was first seen."""
    request = refresh_request(annotations)
    if request is None:
        return None
    return previous if previous is not None and previous[0] == request else (request, now)


async def read_credentials(runtime: Runtime, scope: Scope) -> Mapping[str, Any] | None:
    """The credentials Secret, only its keys: read once per version the Secret watch reports,
    shared by every credential that uses it (known.Logins)."""
    name = scope.credentials_secret
    assert name is not None
    where = scope.credentials_namespace

    async def fetch(keys: tuple[str, ...]) -> Mapping[str, Any] | None:
        async with runtime.gates.slot(where, PASS):
            return only_keys(await runtime.kube.read_secret(where, name), *keys)

    return await runtime.known.logins.read(where, name, scope.keys, fetch)


def unhandled_requests(memories: Iterable[Memory]) -> set[str]:
    """The refresh requests some target has seen but not yet honoured (they wait for the limits)."""
    return {
        m.pending_request[0]
        for m in memories
        if m.pending_request is not None and m.pending_request[0] != m.handled_request
    }


def stale_of(memories: Mapping[str, Memory]) -> dict[str, tuple[tuple[str, ...], int]]:
    """Each target's stale consumers as its last pass found them, where it has checked."""
    return {
        ns: (memory.consumers.stale_consumers, memory.consumers.stale_count)
        for ns, memory in memories.items()
        if memory.consumers.stale_consumers is not None
    }


class CredentialWorker:
    def __init__(
        self,
        credential: Mapping[str, Any],
        runtime: Runtime,
        kind: Kind,
        namespaces: Mapping[str, NamespaceInfo] = NO_NAMESPACES,
        listed: asyncio.Event | None = None,
    ) -> None:
        """`credential` as first seen, status included (after a restart the status is what this
        process remembers). `namespaces` and `listed`: the namespace view a cluster-wide kind
        selects from, and the flag that it is complete."""
        meta = credential["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta.get("namespace") or ""
        self.runtime, self.kind = runtime, kind
        self.key = f"{self.namespace}/{self.name}" if kind.namespaced else self.name
        """Names the credential in logs and metrics: one string, not one per use."""
        self._namespaces, self._listed = namespaces, listed
        status = credential.get("status") or {}
        self.credential: Mapping[str, Any] = {k: v for k, v in credential.items() if k != "status"}
        self._resumed: Memory | None = Memory.from_status(status) if kind.namespaced else None
        """A namespaced pass resumes from the status it wrote; a cluster-wide target starts afresh."""
        request = status.get("lastRefreshRequest")
        self.handled_request: str | None = request if isinstance(request, str) else None
        self._request_seen: tuple[str, float] | None = None
        """A refresh request and when it was first seen: one moment for all targets, so that the
        one new token satisfies them all (a later moment per target would ask again)."""
        self.targets: dict[str, Target] = {}
        self._holdings = None if kind.namespaced else Holdings(self.key)
        """Only a cluster-wide kind's Secrets come and go with the selection."""
        self._reporter = Reporter(runtime, kind, self.key, StatusFence(meta.get("resourceVersion"), status))
        self._dirty: frozenset[str] | None = None
        """Targets to look at on the next round; None: all of them."""
        self.selected: frozenset[str] = frozenset()
        self.scope: Scope | None = None
        self.due_at: float | None = None
        """When this worker should next run; /healthz flags it if it is long overdue."""
        self._wake = Wake()
        self._nudge_target: Callable[[str], None] = self.nudge
        """The one bound method every target of this credential calls."""
        self._task: asyncio.Task[None] | None = None
        """The round running, if one is."""
        self._failures = 0
        """Rounds failed in a row: they set the backoff before the next."""
        self._stopped = False

    # -- control ------------------------------------------------------------------------------

    def start(self) -> None:
        self._begin()

    def _begin(self) -> None:
        # A fresh context: started from a kopf handler, the task would otherwise inherit kopf's
        # context variables and keep that event's body, cause and logger alive.
        self._task = asyncio.create_task(
            self._round(), name=f"{self.kind.kind}:{self.key}", context=contextvars.Context()
        )

    async def stop(self) -> None:
        self._stopped = True
        self._wake.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for namespace in list(self.targets):
            self._forget(namespace)
        self.runtime.metrics.forget(self.namespace, self.name)

    def update(self, credential: Mapping[str, Any], status: Mapping[str, Any] | None = None) -> None:
        """A newer version of the credential, and its status as stored (reporting.StatusFence)."""
        self.credential = credential
        self.observed(credential["metadata"].get("resourceVersion"), status)

    def observed(self, resource_version: str | None, status: Mapping[str, Any] | None) -> None:
        """A watch event of the credential that changed nothing the worker keeps of it (the
        resourceVersion of `credential` is then the one it was first seen at)."""
        if self._reporter.fence.observed(resource_version, status):
            self._wake.set()

    def nudge(self, namespace: str | None = None) -> None:
        """Look again at one target, or (None) at all of them."""
        if namespace is None:
            self._dirty = None
        elif namespace not in self.selected and self._holdings is not None:
            self._holdings.suspect(namespace)  # a Secret of ours landed there: the next release looks
        elif self._dirty is not None:
            self._dirty |= {namespace}
        self._wake.set()

    def selection_changed(self) -> None:
        """Namespaces or their labels changed: the next round compares the selection and looks at
        newcomers only."""
        self._wake.set()

    # -- the loop -----------------------------------------------------------------------------

    async def _round(self) -> None:
        """One round, then to sleep: the next round begins when the wake is set or its time comes."""
        await self.runtime.start_gate.wait()
        if self._listed is not None:
            await self._listed.wait()
        self._wake.clear()
        try:
            wake_at = await self.run_once()
            self._failures = 0
        except Exception as error:
            self._failures += 1
            failures = self._failures
            delay = backoff_delay(failures, jitter_fraction(f"{self.key}:{failures}"))
            if isinstance(error, KubeError):  # expected: the message names the call and the status
                logger.warning("%s: %s; retrying in %.0fs", self.key, error, delay)
            else:
                logger.exception("%s: unexpected error; retrying in %.0fs", self.key, delay)
            self._dirty = None
            wake_at = self.runtime.clock() + delay
        self.due_at = wake_at
        self._task = None  # a finished task is not kept: it would cost what sleeping saves
        if not self._stopped:
            self._wake.sleep(wake_at, self.runtime.clock, self._begin)

    async def run_once(self) -> float | None:
        """One round over the targets that need it; returns when to look again (None: on events)."""
        self._resumed, self._dirty = self._reporter.compare_with_stored(
            self._resumed, self.targets, self._dirty
        )
        dirty, self._dirty = self._dirty, NOTHING
        annotations = self.credential["metadata"].get("annotations")
        self._request_seen = request_seen(self._request_seen, annotations, self.runtime.clock())
        try:
            scope = self.kind.scope(self.credential, self._namespaces)
        except SpecError as error:
            self.scope = None
            await self._reporter.report(self.credential, round_of(self, {}, {}, {}, problem=error))
            return self._reporter.next_round([])
        self.scope, previous = scope, self.selected
        self.selected = scope.targets
        await self._release(scope)
        todo = self._todo(dirty, previous)
        login = await read_credentials(self.runtime, scope) if todo and scope.credentials_secret else None
        credentials = (scope.credentials_namespace, login)
        if len(todo) == 1:  # a SimacanCredential: no task of its own (thousands wait for a slot at a start)
            concluded = [await self._target_pass(todo[0], credentials)]
        else:
            concluded = await asyncio.gather(*(self._target_pass(ns, credentials) for ns in todo))
        passes = {ns: done for ns, done in zip(todo, concluded, strict=True) if done is not None}
        notes = {ns: p.notes for ns, p in passes.items()}
        statuses = {ns: p.status for ns, p in passes.items() if p.status}
        written = await self._reporter.report(
            self.credential, round_of(self, notes, statuses, {ns: p.memory for ns, p in passes.items()})
        )
        for ns, done in passes.items():  # kept once reported: a failed status patch discards them
            self.targets[ns].memory = done.memory if written else unwritten(done.memory)
        pending = [t.due for ns, t in self.targets.items() if ns in self.selected and t.due is not None]
        return self._reporter.next_round(pending)

    def _todo(self, dirty: frozenset[str] | None, previous: frozenset[str]) -> list[str]:
        """The targets this round looks at: all of them (`dirty` None), or those marked, newly
        selected or due. Its own method so that its sets are gone while the round waits."""
        if dirty is None:
            return sorted(self.selected)
        now = self.runtime.clock()
        due = {ns for ns, target in self.targets.items() if target.due is not None and target.due <= now}
        return sorted((dirty & self.selected) | (self.selected - previous) | due)

    async def _target_pass(self, namespace: str, credentials: LoginRead) -> Concluded | None:
        """One target's pass; None when it concluded nothing (a retry is planned)."""
        target = self.targets.get(namespace)
        if target is None:
            memory = self._resumed or Memory(handled_request=self.handled_request)
            self._resumed = None
            target = self.targets[namespace] = Target(namespace, memory, self.key, self._nudge_target)
        request, pending = self._request_seen, target.memory.pending_request
        if request is not None and request[0] not in (target.memory.handled_request, pending and pending[0]):
            target.memory = dataclasses.replace(target.memory, pending_request=request)
        view = self.kind.view(self.credential, namespace)
        return await target.attempt(view, credentials, self.runtime)

    # -- targets that go ----------------------------------------------------------------------

    def _forget(self, namespace: str) -> None:
        self.runtime.pool.detach(pool_user(self.kind.view(self.credential, namespace)))
        assert self.runtime.workloads is not None
        self.runtime.workloads.release(namespace, self.key)
        self.targets.pop(namespace, None)

    async def _release(self, scope: Scope) -> None:
        """Forget targets that stopped being selected; a cluster-wide credential's Secret goes too."""
        for namespace in set(self.targets) - self.selected:
            self._forget(namespace)
        if self._holdings is not None:  # a SimacanCredential's one target never changes
            uid = self.credential["metadata"]["uid"]
            await self._holdings.release(
                self.runtime, uid, scope.secret_name, self.selected, self._namespaces
            )


def round_of(
    worker: CredentialWorker,
    notes: Mapping[str, tuple[Note, ...]],
    statuses: Mapping[str, dict[str, Any]],
    concluded: Mapping[str, Memory],
    problem: SpecError | None = None,
) -> Round:
    """What a round concluded, for the kind to report. `concluded`: the memories of this round's
    passes, kept once the round is reported."""
    memories = {ns: concluded.get(ns, t.memory) for ns, t in worker.targets.items() if ns in worker.selected}
    handled = {memory.handled_request for memory in memories.values()}
    if len(handled) == 1 and worker.selected <= set(worker.targets):
        worker.handled_request = handled.pop()
    outcomes = {
        ns: (t.outcome if (t := worker.targets.get(ns)) else None) or PENDING for ns in worker.selected
    }
    generation = worker.credential["metadata"].get("generation")
    secret_name = worker.scope.secret_name if worker.scope else None
    pending = min(unhandled_requests(memories.values()), default=None)
    return Round(
        outcomes,
        notes,
        statuses,
        worker.handled_request,
        secret_name,
        generation,
        problem,
        stale_of(memories),
        pending,
    )
