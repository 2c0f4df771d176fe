"""The loop around one SimacanCredential: gather, run a pass, perform its result, sleep.

Each credential gets one asyncio task that sleeps until its next refresh, a retry, or a
nudge from a watch event. Sleeping tasks cost a few KiB, unlike a kopf daemon per object.
The pass itself (reconcile.py) does no Kubernetes I/O; this module does all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from simacan_token_operator.controller.workloads import NamespaceWorkloads
from simacan_token_operator.kube.client import KubeError, ObjectRef, StampPage
from simacan_token_operator.model.schedule import backoff_delay, jitter_fraction
from simacan_token_operator.model.spec import AuthURLPolicy, RestartTarget, SpecError, parse_spec
from simacan_token_operator.reconcile import report
from simacan_token_operator.reconcile.consumers import RESTARTED_AT_ANNOTATION
from simacan_token_operator.reconcile.decide import (
    REFUSED_WRITE_STATUSES,
    Gathered,
    Memory,
    RestartRefused,
    Result,
    Services,
    TokenSource,
    pool_user,
    reconcile,
    refused_write,
)
from simacan_token_operator.reconcile.report import MetricsSink
from simacan_token_operator.reconcile.tokensecret import rfc3339

logger = logging.getLogger(__name__)
T = TypeVar("T")

CONFLICT_RETRY_SECONDS = 0.5
"""After a 404 or 409 on a write another writer was quicker: read again shortly."""
KUBE_CONCURRENCY = 16
NAMESPACE_CONCURRENCY = 4
"""Of the KUBE_CONCURRENCY slots, at most this many serve one namespace at a time."""


class WriteRefused(Exception):
    """The API server refused the token Secret for what it holds; `message` names the call and why."""

    def __init__(self, error: KubeError) -> None:
        super().__init__(str(error))
        self.message = str(error)


async def write_secret(kube: KubeSeam, namespace: str, result: Result, who: str) -> bool:
    """Create or replace the token Secret a pass asked for; False if another writer got there
    first (404 or 409: look again shortly); WriteRefused if the API server refused its content."""
    write = result.write
    if write is None:
        return True
    try:
        if write.create:
            await kube.create_secret(namespace, write.body)
        else:
            await kube.replace_secret(namespace, write.body)
    except KubeError as error:
        if error.status in (404, 409):
            return False
        if error.status in REFUSED_WRITE_STATUSES:
            raise WriteRefused(error) from None
        raise
    token = result.outcome.token
    logger.info(
        "%s: wrote Secret %s/%s (%s); valid until %s",
        who,
        namespace,
        write.body["metadata"]["name"],
        write.reason,
        rfc3339(token.expires_at) if token else "?",
    )
    return True


class KubeSeam(Protocol):
    """The Kubernetes calls a worker makes; kube.Kube implements them over HTTP, tests over a dict."""

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...
    async def replace_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...
    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]: ...
    async def post_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None: ...
    async def read_workload(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None: ...
    async def list_workload_stamps(
        self, namespace: str, kind: str, limit: int, continue_token: str | None
    ) -> StampPage: ...
    async def read_workload_fields(
        self, namespace: str, kind: str, name: str, keep: frozenset[str]
    ) -> dict[str, Any] | None: ...
    async def restart_workload(
        self, namespace: str, kind: str, name: str, resource_version: str, annotation: str, value: str
    ) -> None: ...


@dataclass
class Runtime:
    """What every worker shares."""

    kube: KubeSeam
    pool: TokenSource
    auth_policy: AuthURLPolicy
    metrics: MetricsSink
    clock: Callable[[], float] = time.time
    kube_gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(KUBE_CONCURRENCY))
    """Bounds concurrent Kubernetes calls: a start with thousands of credentials stays a steady
    trickle instead of a burst that inflates memory for good. Never held while waiting for the
    Auth API, so a slow login source cannot hold up anyone else."""
    namespace_gates: NamespaceGates = field(default_factory=lambda: NamespaceGates(NAMESPACE_CONCURRENCY))
    workloads: NamespaceWorkloads | None = None
    """Set by __post_init__: each namespace's workload verdicts, for the stale-consumer check."""

    def __post_init__(self) -> None:
        if self.workloads is None:
            self.workloads = NamespaceWorkloads(self.kube, self.clock)

    @property
    def services(self) -> Services:
        return Services(self.pool, self.auth_policy, self.clock)


async def sleep_until(wake: asyncio.Event, wake_at: float | None, clock: Callable[[], float]) -> None:
    """Until `wake` is set or `wake_at` (by `clock`) comes; None waits for `wake` alone.

    A timer handle rather than asyncio.wait_for: no extra Task per sleep, per credential."""
    timer = None
    if wake_at is not None:
        timer = asyncio.get_running_loop().call_later(max(wake_at - clock(), 0.0), wake.set)
    try:
        await wake.wait()
    finally:
        if timer is not None:
            timer.cancel()


class NamespaceGates:
    """A semaphore per namespace with work in flight, so that one namespace's credentials hold at
    most NAMESPACE_CONCURRENCY of the shared Kubernetes slots: a tenant with many credentials (or
    many restart targets) queues behind itself, not in front of its neighbours."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._gates: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def held(self, namespace: str) -> AsyncIterator[asyncio.Semaphore]:
        """The namespace's semaphore, kept while anyone uses it and dropped after the last."""
        gate, users = self._gates.get(namespace) or (asyncio.Semaphore(self._limit), 0)
        self._gates[namespace] = (gate, users + 1)
        try:
            yield gate
        finally:
            gate, users = self._gates[namespace]
            if users == 1:
                del self._gates[namespace]
            else:
                self._gates[namespace] = (gate, users - 1)

    def __len__(self) -> int:
        return len(self._gates)


class _Slot:
    """One slot of each of some semaphores (taken in order), that can be given up for a while and
    taken back, and that are released on exit only if held (a cancelled take-back leaves nothing
    to release)."""

    def __init__(self, *gates: asyncio.Semaphore) -> None:
        self._gates = gates
        self._held = 0

    async def _take(self) -> None:
        for gate in self._gates:
            await gate.acquire()
            self._held += 1

    def _give(self) -> None:
        for gate in reversed(self._gates[: self._held]):
            gate.release()
        self._held = 0

    async def __aenter__(self) -> _Slot:
        try:
            await self._take()
        except BaseException:
            self._give()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        self._give()

    async def given_up_while(self, awaitable: Awaitable[T]) -> T:
        self._give()
        try:
            return await awaitable
        finally:
            try:
                await self._take()
            except BaseException:
                self._give()
                raise


def _trimmed(secret: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Secret without managedFields: thousands of passes at a start must not each keep a copy."""
    if secret is not None:
        (secret.get("metadata") or {}).pop("managedFields", None)
    return secret


def _only_keys(secret: dict[str, Any] | None, *keys: str) -> dict[str, Any] | None:
    """Of the credentials Secret, only the keys the spec names and the resourceVersion."""
    if secret is None:
        return None
    meta, data = secret.get("metadata") or {}, secret.get("data") or {}
    return {
        "metadata": {"name": meta.get("name"), "resourceVersion": meta.get("resourceVersion")},
        "data": {key: data[key] for key in keys if key in data},
    }


class CredentialWorker:
    def __init__(self, credential: Mapping[str, Any], runtime: Runtime) -> None:
        """`credential` is the SimacanCredential as first seen, status included (after a restart
        the status is what this process remembers)."""
        meta = credential["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.runtime = runtime
        self.memory = Memory.from_status(credential.get("status"))
        self.credential: Mapping[str, Any] = {k: v for k, v in credential.items() if k != "status"}
        self.due_at: float | None = None
        """When this worker should next run; health checks flag it if it is long overdue."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._refused_patch: dict[RestartTarget, float] = {}
        """Restart targets whose patch got HTTP 403, and the time of the pass that tried it."""
        self._refused_get: set[RestartTarget] = set()
        self._gathered_at = 0.0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def start(self) -> None:
        # A fresh context: started from a kopf handler, the task would otherwise inherit kopf's
        # context variables and keep that event's body, cause and logger alive for good.
        self._task = asyncio.create_task(
            self._run(), name=f"credential:{self.key}", context=contextvars.Context()
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.runtime.pool.detach(pool_user(self.credential))
        self.runtime.metrics.forget(self.namespace, self.name)
        assert self.runtime.workloads is not None
        self.runtime.workloads.release(self.namespace, self.key)

    def update(self, credential: Mapping[str, Any]) -> None:
        """A newer version of the SimacanCredential; the next pass uses it."""
        self.credential = credential

    def nudge(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            wake_at = await self._pass_or_back_off()
            self.due_at = wake_at
            await sleep_until(self._wake, wake_at, self.runtime.clock)

    async def _pass_or_back_off(self) -> float | None:
        try:
            wake_at = await self.run_once()
        except Exception as error:
            self._failures += 1
            delay = backoff_delay(self._failures, jitter_fraction(f"{self.key}:{self._failures}"))
            if isinstance(error, KubeError):  # expected: the message names the call and the status
                logger.warning("%s: %s; retrying in %.0fs", self.key, error, delay)
            else:
                logger.exception("%s: unexpected error; retrying in %.0fs", self.key, delay)
            return self.runtime.clock() + delay
        self._failures = 0
        return wake_at

    async def run_once(self) -> float | None:
        """Gather, decide, act; returns when to look again (None: on events only).

        The whole pass holds a slot of the Kubernetes gate, so at most KUBE_CONCURRENCY passes
        (and their Secrets) are in memory at once, except while a pass waits for a token: then
        it gives its slot up, and one slow login source cannot hold up the others."""
        runtime = self.runtime
        async with (
            runtime.namespace_gates.held(self.namespace) as own,
            _Slot(own, runtime.kube_gate) as slot,
        ):
            services = dataclasses.replace(runtime.services, while_waiting=slot.given_up_while)
            gathered = await self._gather()
            result = await reconcile(gathered, services)
            try:
                performed = await self._perform(result)
            except WriteRefused as refused:
                logger.warning("%s: %s", self.key, refused.message)
                result = refused_write(gathered, result, refused.message)
                performed = await self._perform(result)
            if not performed:
                return runtime.clock() + CONFLICT_RETRY_SECONDS
        self.memory = result.memory
        runtime.metrics.publish(self.namespace, self.name, result.outcome, result.attempt)
        return result.requeue_at

    async def _gather(self) -> Gathered:
        credential, kube = self.credential, self.runtime.kube
        try:
            spec = parse_spec(self.name, self.namespace, credential.get("spec") or {})
        except SpecError:  # the pass reports the spec; nothing to read
            return Gathered(credential, None, None, self.memory, self.runtime.clock())
        target = _trimmed(await kube.read_secret(self.namespace, spec.target_secret))
        credentials = _only_keys(
            await kube.read_secret(self.namespace, spec.credentials_secret),
            spec.username_key,
            spec.password_key,
        )
        workloads, refused = await self._read_restart_targets(spec.restart_targets)
        assert self.runtime.workloads is not None
        listed = self.runtime.workloads.survey(self.namespace, self.key, self.nudge)
        self._gathered_at = self.runtime.clock()
        return Gathered(
            credential, target, credentials, self.memory, self._gathered_at, workloads, listed, refused
        )

    async def _read_restart_targets(
        self, targets: tuple[RestartTarget, ...]
    ) -> tuple[dict[RestartTarget, dict[str, Any] | None], dict[RestartTarget, RestartRefused]]:
        """Each target as read (None: not found), and those we may not read or (lately) patch.

        A 403 is the pass's to report (RestartNotPermitted); it never stops the token's refresh."""
        self._refused_patch = {t: at for t, at in self._refused_patch.items() if t in targets}
        refused = {t: RestartRefused("patch", at) for t, at in self._refused_patch.items()}
        workloads: dict[RestartTarget, dict[str, Any] | None] = {}
        refused_get: set[RestartTarget] = set()
        for t in targets:
            try:
                workloads[t] = await self.runtime.kube.read_workload(self.namespace, t.kind, t.name)
            except KubeError as error:
                if error.status != 403:
                    raise
                refused[t] = RestartRefused("get", self.runtime.clock())
                refused_get.add(t)
                if t not in self._refused_get:
                    logger.warning("%s: may not read restart target %s: %s", self.key, t, error)
        self._refused_get = refused_get
        return workloads, refused

    async def _perform(self, result: Result) -> bool:
        """Write, announce, record; False if another writer got to the Secret first."""
        kube = self.runtime.kube
        if not await write_secret(kube, self.namespace, result, self.key):
            return False
        done: list[report.Note] = []
        for restart in result.restarts:
            target = restart.target
            try:
                await kube.restart_workload(
                    self.namespace,
                    target.kind,
                    target.name,
                    restart.resource_version,
                    RESTARTED_AT_ANNOTATION,
                    restart.at,
                )
            except KubeError as error:
                if error.status in (404, 409):  # changed meanwhile (maybe restarted by another replica)
                    return False
                if error.status != 403:
                    raise
                if target not in self._refused_patch:  # news: the next pass reports it
                    logger.warning("%s: may not restart %s: %s", self.key, target, error)
                    self.nudge()
                self._refused_patch[target] = self._gathered_at
                continue
            self._refused_patch.pop(target, None)
            self.nudge()  # the next pass lists the restart and reports that restarts are permitted
            done.append(restart.done)
            logger.info("%s: restarted %s to load the new token", self.key, target)
        for note in (*result.events, *done):
            await self._post(note)
        if result.status is not None:
            try:
                await kube.patch_status(self.namespace, self.name, result.status)
            except KubeError as error:
                if error.status != 404:  # 404: deleted meanwhile; the watch will stop us
                    raise
        return True

    async def _post(self, note: report.Note) -> None:
        meta = self.credential["metadata"]
        ref = ObjectRef(
            self.namespace,
            self.name,
            meta["uid"],
            str(self.credential.get("apiVersion")),
            str(self.credential.get("kind")),
        )
        try:
            await self.runtime.kube.post_event(ref, note.type, note.reason, note.message)
        except KubeError as error:
            logger.warning("%s: could not post Event %s: %s", self.key, note.reason, error)
