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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from . import report
from .consumers import RESTARTED_AT_ANNOTATION
from .kube import KubeError, ObjectRef, StampPage
from .metrics import Metrics
from .pool import TokenPool
from .reconcile import Gathered, Memory, Result, Services, pool_user, reconcile
from .schedule import backoff_delay, jitter_fraction
from .spec import AuthURLPolicy, SpecError, parse_spec
from .tokensecret import rfc3339
from .workloads import NamespaceWorkloads

logger = logging.getLogger(__name__)
T = TypeVar("T")

CONFLICT_RETRY_SECONDS = 0.5
"""After a 404 or 409 on a write another writer was quicker: read again shortly."""
KUBE_CONCURRENCY = 16


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
    pool: TokenPool
    auth_policy: AuthURLPolicy
    metrics: Metrics
    clock: Callable[[], float] = time.time
    kube_gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(KUBE_CONCURRENCY))
    """Bounds concurrent Kubernetes calls: a start with thousands of credentials stays a steady
    trickle instead of a burst that inflates memory for good. Never held while waiting for the
    Auth API, so a slow login source cannot hold up anyone else."""
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


class _Slot:
    """One slot of a semaphore that can be given up for a while and taken back, and that is
    released on exit only if it is held (a cancelled take-back leaves nothing to release)."""

    def __init__(self, gate: asyncio.Semaphore) -> None:
        self._gate = gate
        self._held = False

    async def __aenter__(self) -> _Slot:
        await self._gate.acquire()
        self._held = True
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._held:
            self._held = False
            self._gate.release()

    async def given_up_while(self, awaitable: Awaitable[T]) -> T:
        self._held = False
        self._gate.release()
        try:
            return await awaitable
        finally:
            await self._gate.acquire()
            self._held = True


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
        async with _Slot(runtime.kube_gate) as slot:
            services = dataclasses.replace(runtime.services, while_waiting=slot.given_up_while)
            result = await reconcile(await self._gather(), services)
            if not await self._perform(result):
                return runtime.clock() + CONFLICT_RETRY_SECONDS
        self.memory = result.memory
        report.publish(runtime.metrics, self.namespace, self.name, result.outcome, result.attempt)
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
        workloads = {
            t: await kube.read_workload(self.namespace, t.kind, t.name) for t in spec.restart_targets
        }
        assert self.runtime.workloads is not None
        listed = self.runtime.workloads.survey(self.namespace, self.key, self.nudge)
        return Gathered(credential, target, credentials, self.memory, self.runtime.clock(), workloads, listed)

    async def _perform(self, result: Result) -> bool:
        """Write, announce, record; False if another writer got to the Secret first."""
        kube = self.runtime.kube
        write = result.write
        if write is not None:
            try:
                if write.create:
                    await kube.create_secret(self.namespace, write.body)
                else:
                    await kube.replace_secret(self.namespace, write.body)
            except KubeError as error:
                if error.status in (404, 409):
                    return False
                raise
            token = result.outcome.token
            logger.info(
                "%s: wrote Secret %s (%s); valid until %s",
                self.key,
                write.body["metadata"]["name"],
                write.reason,
                rfc3339(token.expires_at) if token else "?",
            )
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
                raise
            logger.info("%s: restarted %s to load the new token", self.key, target)
        for note in result.events:
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
