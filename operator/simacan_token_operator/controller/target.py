"""One target of a credential: its token Secret in one namespace, and what its passes remember.

A pass here gathers (the token Secret, restart targets, the workload survey), runs the pure pass
(reconcile/decide.py) and writes what it decided: the Secret and rollout restarts. Events and
the status are the worker's to report, for all targets at once (kinds.py says how).

The token Secret is read only when the Secret watch may have seen it change: a target keeps what
it last wrote or read (known.py) and the watch's events of other versions drop that.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from simacan_token_operator.controller.gates import PASS
from simacan_token_operator.controller.known import KnownSecret, WatchedSecret, known_secret
from simacan_token_operator.controller.runtime import (
    CONFLICT_RETRY_SECONDS,
    Runtime,
    WriteRefused,
    write_secret,
)
from simacan_token_operator.kube.client import KubeError
from simacan_token_operator.model.schedule import backoff_delay, jitter_fraction
from simacan_token_operator.model.spec import CredentialSpec, RestartTarget, SpecError, parse_spec
from simacan_token_operator.reconcile.clusterstatus import PENDING
from simacan_token_operator.reconcile.consumers import RESTARTED_AT_ANNOTATION
from simacan_token_operator.reconcile.consumerstep import Consumers, RestartRefused
from simacan_token_operator.reconcile.decide import (
    Gathered,
    Memory,
    Result,
    Services,
    reconcile,
    refused_write,
)
from simacan_token_operator.reconcile.report import Note
from simacan_token_operator.reconcile.status import Outcome

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Concluded:
    """One target's pass, performed: what to report, and what to remember once reported."""

    outcome: Outcome
    notes: tuple[Note, ...]
    status: dict[str, Any] | None
    memory: Memory
    attempt: str | None
    requeue_at: float | None


LoginRead = tuple[str, Mapping[str, Any] | None]
"""The credentials Secret's namespace and what a round read of it (only the keys its specs name)."""


def trimmed(secret: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Secret without managedFields: thousands of passes at a start must not each keep a copy."""
    if secret is not None:
        (secret.get("metadata") or {}).pop("managedFields", None)
    return secret


def only_keys(secret: dict[str, Any] | None, *keys: str) -> dict[str, Any] | None:
    """Of the credentials Secret, only the keys the spec names and the resourceVersion."""
    if secret is None:
        return None
    meta, data = secret.get("metadata") or {}, secret.get("data") or {}
    return {
        "metadata": {"name": meta.get("name"), "resourceVersion": meta.get("resourceVersion")},
        "data": {key: data[key] for key in keys if key in data},
    }


class Target:
    __slots__ = (
        "_epoch",
        "_gathered_at",
        "_nudge",
        "_presumed",
        "_refused_get",
        "_refused_patch",
        "_reused",
        "_spec",
        "_who",
        "_written",
        "due",
        "failures",
        "memory",
        "namespace",
        "outcome",
        "watched",
    )

    def __init__(self, namespace: str, memory: Memory, who: str, nudge: Callable[[str], None]) -> None:
        """`who` names the credential in logs; `nudge(namespace)` asks for another pass of a
        target (one callable per credential, not a closure per target)."""
        self.namespace = namespace
        self.memory = memory
        self.outcome: Outcome | None = None
        """The last outcome concluded; None before the first."""
        self.due: float | None = None
        self.failures = 0
        self._who, self._nudge = who, nudge
        self._refused_patch: dict[RestartTarget, float] | None = None
        """Restart targets whose patch got HTTP 403, and the time of the pass that tried it; None
        while there are none (thousands of targets keep no empty dict each)."""
        self._refused_get = NOTHING_REFUSED
        self._gathered_at = 0.0
        self.watched = WatchedSecret(namespace)
        """The token Secret as this process last wrote or read it, while the watch vouches for it."""
        self._epoch: int | None = None
        self._spec: CredentialSpec | None = None
        self._reused = self._presumed = False
        """Whether this pass reused what it knew of its Secret, or presumed it absent, unread."""
        self._written: dict[str, Any] | None = None

    def nudge(self) -> None:
        self._nudge(self.namespace)

    async def attempt(
        self, view: Mapping[str, Any], credentials: LoginRead, runtime: Runtime
    ) -> Concluded | None:
        """A pass, and when to try again if it concluded nothing: backoff after a failed
        Kubernetes call, shortly after another writer was quicker."""
        try:
            done = await self.run(view, credentials, runtime)
        except KubeError as error:
            if self.outcome is None:
                self.outcome = dataclasses.replace(PENDING, message=f"{PENDING.message}: {error}")
            self.failures += 1
            delay = backoff_delay(
                self.failures, jitter_fraction(f"{self._who}:{self.namespace}:{self.failures}")
            )
            logger.warning("%s: namespace %s: %s; retrying in %.0fs", self._who, self.namespace, error, delay)
            self.due = runtime.clock() + delay
            return None
        self.failures = 0
        if done is None:
            self.due = runtime.clock() + CONFLICT_RETRY_SECONDS
            return None
        self.outcome, self.due = done.outcome, done.requeue_at
        if done.attempt is not None:
            runtime.metrics.count_attempt(done.attempt)
        return done

    async def run(
        self, view: Mapping[str, Any], credentials: LoginRead, runtime: Runtime
    ) -> Concluded | None:
        """Gather, decide, write; None if another writer got to the Secret first.

        The pass holds a slot of its namespace's gate and of the shared one, so at most
        KUBE_CONCURRENCY passes (and their Secrets) are in memory at once and one namespace holds
        at most NAMESPACE_CONCURRENCY of them, except while a pass waits for a token: then it
        gives its slots up, and one slow login source cannot hold up the others."""
        self._written, learned = None, None
        self.watched.listen()
        try:
            async with runtime.gates.slot(self.namespace, PASS) as slot:
                services = dataclasses.replace(runtime.services, while_waiting=slot.given_up_while)
                gathered, result, done = await self._decide_and_write(view, credentials, runtime, services)
                if done is None:
                    return None
                learned = self._learned(gathered.target, result)
        finally:
            # Only for the pass: thousands of idle targets keep no Secret body or spec each.
            self._written = self._spec = None
            if self.watched.settle(learned):
                self.nudge()  # changed by someone else meanwhile: look again
        notes = (*result.events, *done)
        return Concluded(
            result.outcome, notes, result.status, result.memory, result.attempt, result.requeue_at
        )

    async def _decide_and_write(
        self, view: Mapping[str, Any], credentials: LoginRead, runtime: Runtime, services: Services
    ) -> tuple[Gathered, Result, tuple[Note, ...] | None]:
        """Twice if a presumed absence (known.Present) was wrong, the create's 409: then it reads."""
        for presume in (True, False):
            gathered = await self._gather(view, credentials, runtime, presume)
            result = await reconcile(gathered, services)
            try:
                done = await self._perform(result, runtime)
            except WriteRefused as refused:
                logger.warning("%s: %s", self._who, refused.message)
                result = refused_write(gathered, refused.message)
                done = await self._perform(result, runtime)
            if done is not None or not self._presumed or self._written is not None:
                break
        return gathered, result, done

    async def _gather(
        self, view: Mapping[str, Any], credentials: LoginRead, runtime: Runtime, presume: bool
    ) -> Gathered:
        meta = view["metadata"]
        where, login = credentials
        self._spec, self._reused, self._presumed = None, False, False
        try:
            spec = parse_spec(meta["name"], self.namespace, view.get("spec") or {})
        except SpecError:  # the pass reports the spec; nothing to read
            return Gathered(view, None, None, self.memory, runtime.clock())
        self._spec = spec
        self._epoch = epoch = runtime.known.epochs.of(self.namespace)
        known, secret = self.watched.known, None
        if known is not None and epoch == known.epoch and known.name == spec.target_secret:
            secret = known.body(spec)
        self._reused = secret is not None
        if secret is None:
            self._presumed = presume and runtime.known.present.absent(self.namespace, spec.target_secret)
            if not self._presumed:
                secret = trimmed(await runtime.kube.read_secret(self.namespace, spec.target_secret))
        if self._refused_patch:
            kept = {t: at for t, at in self._refused_patch.items() if t in spec.restart_targets}
            self._refused_patch = kept or None
        workloads, refused, self._refused_get = await read_restart_targets(
            self.namespace, spec.restart_targets, runtime, self._refused_patch, self._refused_get, self._who
        )
        assert runtime.workloads is not None
        listed = runtime.workloads.survey(self.namespace, self._who, self.nudge)
        self._gathered_at = runtime.clock()
        return Gathered(
            view,
            secret,
            login,
            self.memory,
            self._gathered_at,
            Consumers(workloads, listed, refused),
            credentials_namespace=where,
        )

    def _learned(self, secret: Mapping[str, Any] | None, result: Result) -> KnownSecret | None:
        """What to keep of the token Secret after a pass: as written, or as read."""
        if result.write is not None:
            secret = self._written
        elif self._reused:
            return self.watched.known  # the same Secret, not read: nothing new to learn
        return known_secret(secret, result.outcome.token, self._spec, self._epoch)

    async def _perform(self, result: Result, runtime: Runtime) -> tuple[Note, ...] | None:
        """Write the Secret and restart its consumers; the Events of restarts that happened, or
        None if another writer got to the Secret (or a restart target) first."""
        kube = runtime.kube
        written, self._written = await write_secret(kube, self.namespace, result, self._who)
        if not written:
            return None
        done: list[Note] = []
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
                    return None
                if error.status != 403:
                    raise
                refused = self._refused_patch = self._refused_patch or {}
                if target not in refused:  # news: the next pass reports it
                    logger.warning("%s: may not restart %s: %s", self._who, target, error)
                    self.nudge()
                refused[target] = self._gathered_at
                continue
            if self._refused_patch:
                self._refused_patch.pop(target, None)
            self.nudge()  # the next pass lists the restart and reports that restarts are permitted
            done.append(restart.done)
            logger.info("%s: restarted %s to load the new token", self._who, target)
        return tuple(done)


Workloads = dict[RestartTarget, dict[str, Any] | None]
NOTHING_REFUSED: frozenset[RestartTarget] = frozenset()
"""Shared by every target that may read all its restart targets: no empty set each."""


async def read_restart_targets(
    namespace: str,
    targets: tuple[RestartTarget, ...],
    runtime: Runtime,
    refused_patch: Mapping[RestartTarget, float] | None,
    refused_before: frozenset[RestartTarget],
    who: str,
) -> tuple[
    dict[RestartTarget, dict[str, Any] | None], dict[RestartTarget, RestartRefused], frozenset[RestartTarget]
]:
    """Each target as read (None: not found), those we may not read or (lately) patch, and those
    we may not read (a Warning is logged when one is new).

    A 403 is the pass's to report (RestartNotPermitted); it never stops the token's refresh."""
    refused = {t: RestartRefused("patch", at) for t, at in (refused_patch or {}).items()}
    workloads: Workloads = {}
    refused_get: set[RestartTarget] = set()
    for t in targets:
        try:
            workloads[t] = await runtime.kube.read_workload(namespace, t.kind, t.name)
        except KubeError as error:
            if error.status != 403:
                raise
            refused[t] = RestartRefused("get", runtime.clock())
            refused_get.add(t)
            if t not in refused_before:
                logger.warning("%s: may not read restart target %s: %s", who, t, error)
    return workloads, refused, frozenset(refused_get) if refused_get else NOTHING_REFUSED
