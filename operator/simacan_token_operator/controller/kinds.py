"""What differs between a SimacanCredential and a ClusterSimacanCredential, and nothing else.

A credential serves one or more target namespaces from one login. A SimacanCredential is one with
a single target, its own namespace; a ClusterSimacanCredential one with every namespace it
selects, from a credentials Secret in the one namespace the operator allows for that kind
(--cluster-credentials-namespace). The kinds differ in how a spec is read
(which targets, where the credentials Secret lives), the SimacanCredential-shaped view each
target's pass reads, how the targets' outcomes become one status, and where Events go. The loop,
backoff, gates, refresh requests, the pool key, Secret writes and Event posting are the worker's,
once (worker.py), as cert-manager serves Issuer and ClusterIssuer through one helper.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from simacan_token_operator.kube.client import ObjectRef
from simacan_token_operator.model.clusterspec import (
    CLUSTER_KIND,
    CLUSTER_PLURAL,
    DEFAULT_CREDENTIALS_NAMESPACE,
    NamespaceInfo,
    namespaced_view,
    parse_cluster_spec,
)
from simacan_token_operator.model.spec import API_VERSION, KIND, PLURAL, SpecError, parse_spec
from simacan_token_operator.reconcile.clusterstatus import (
    PENDING,
    Resumed,
    StaleSummary,
    aggregate,
    aggregate_stale,
    cluster_consumers,
    fold_events,
    render_cluster_status,
    resumed,
    stale_from_status,
    stale_since,
)
from simacan_token_operator.reconcile.report import Note
from simacan_token_operator.reconcile.status import (
    Outcome,
    ReadyState,
    StatusContext,
    ready_reason,
    ready_state,
    status_digest,
)


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a credential's passes look: its target namespaces and its credentials Secret."""

    targets: frozenset[str]
    credentials_namespace: str
    credentials_secret: str | None
    """None when the spec names none the operator could read (the pass reports the spec)."""
    keys: tuple[str, str] = ("username", "password")
    """The username and password keys: of the credentials Secret only these are kept."""
    secret_name: str = ""
    """The token Secret's name in every target (cluster kind: to release deselected namespaces)."""


@dataclass(frozen=True)
class Round:
    """What one round of passes concluded, target by target, for the kind to report."""

    outcomes: Mapping[str, Outcome]
    """The latest outcome of every target, PENDING for one not yet served."""
    notes: Mapping[str, tuple[Note, ...]]
    """Events of this round's passes, by target."""
    statuses: Mapping[str, dict[str, Any]]
    """The status each namespace's pass rendered this round, where it changed."""
    handled_request: str | None
    secret_name: str | None
    generation: int | None
    problem: SpecError | None = None
    """The credential's own spec problem, when no target could be served at all."""
    stale: Mapping[str, tuple[tuple[str, ...], int]] = field(default_factory=dict)
    """Per target whose workloads were checked: the first stale consumers named, and how many."""
    pending_request: str | None = None
    """A refresh request some target has yet to honour (it waits for the limits on requests)."""


@dataclass(frozen=True)
class Report:
    """What to tell the user after a round: Events on the credential, its status, its metrics."""

    notes: tuple[Note, ...]
    status: dict[str, Any] | None
    """None: unchanged since the last patch."""
    overall: Outcome | None
    """For the metrics; None when nothing was concluded this round."""
    digest: str | None = None


class Kind(Protocol):
    kind: str
    plural: str
    namespaced: bool

    def scope(self, credential: Mapping[str, Any], namespaces: Mapping[str, NamespaceInfo]) -> Scope:
        """Raises SpecError when the credential's own spec cannot be acted on at all."""

    def view(self, credential: Mapping[str, Any], namespace: str) -> dict[str, Any]:
        """The SimacanCredential-shaped input of one target's pass."""

    def report(self, round_: Round, now: float) -> Report: ...

    def reported(self, report: Report) -> None:
        """The report's status was written (or needed no write): remember it."""

    def event_ref(self, credential: Mapping[str, Any]) -> ObjectRef: ...


@functools.lru_cache(maxsize=4096)
def only(namespace: str) -> frozenset[str]:
    """The one target of a SimacanCredential: shared by the credentials of a namespace, not
    a set each."""
    return frozenset({namespace})


@dataclass
class Namespaced:
    """A SimacanCredential: one target, its own namespace; its pass's status is its status."""

    kind: str = KIND
    plural: str = PLURAL
    namespaced: bool = True

    def scope(self, credential: Mapping[str, Any], namespaces: Mapping[str, NamespaceInfo]) -> Scope:
        meta = credential["metadata"]
        try:
            spec = parse_spec(meta["name"], meta["namespace"], credential.get("spec") or {})
        except SpecError:  # the pass reports it, with the status and Event of any other pass
            return Scope(only(meta["namespace"]), meta["namespace"], None)
        keys = (spec.username_key, spec.password_key)
        return Scope(only(spec.namespace), spec.namespace, spec.credentials_secret, keys, spec.target_secret)

    def view(self, credential: Mapping[str, Any], namespace: str) -> dict[str, Any]:
        return dict(credential)

    def report(self, round_: Round, now: float) -> Report:
        concluded = [ns for ns in round_.notes if ns in round_.outcomes]
        if not concluded:  # no pass concluded this round (a backoff, a conflict)
            return Report((), None, None)
        (namespace,) = concluded
        notes = round_.notes[namespace]
        return Report(notes, round_.statuses.get(namespace), round_.outcomes[namespace])

    def reported(self, report: Report) -> None:
        """The pass keeps its own status digest (reconcile.Memory)."""

    def event_ref(self, credential: Mapping[str, Any]) -> ObjectRef:
        meta = credential["metadata"]
        kind, version = str(credential.get("kind") or KIND), str(credential.get("apiVersion") or API_VERSION)
        return ObjectRef(meta["namespace"], meta["name"], meta["uid"], version, kind)


NAMESPACED = Namespaced()
"""Stateless, so every SimacanCredential's worker shares it."""


@dataclass
class Clusterwide:
    """A ClusterSimacanCredential: every selected namespace is a target; one status for all."""

    kind: str = CLUSTER_KIND
    plural: str = CLUSTER_PLURAL
    namespaced: bool = False
    credentials_namespace: str = DEFAULT_CREDENTIALS_NAMESPACE
    """The only namespace its credentials Secret may be read from (--cluster-credentials-namespace)."""
    status_digest: str | None = None
    ready: ReadyState | None = None
    last_reason: str | None = None
    stale: tuple[StaleSummary, str] | None = None
    """The stale consumers last reported, and since when; kept until every selected namespace
    has been checked again, so a restart or a newcomer does not make the condition flap."""
    resumed: Resumed | None = None
    """The token the last status reported, until this process obtains one (clusterstatus.aggregate)."""

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None, credentials_namespace: str) -> Clusterwide:
        status = status or {}
        return cls(
            credentials_namespace=credentials_namespace,
            status_digest=status_digest(status) if status else None,
            ready=ready_state(status),
            last_reason=ready_reason(status),
            stale=stale_from_status(status),
            resumed=resumed(status),
        )

    def scope(self, credential: Mapping[str, Any], namespaces: Mapping[str, NamespaceInfo]) -> Scope:
        spec = parse_cluster_spec(
            credential["metadata"]["name"], credential.get("spec") or {}, self.credentials_namespace
        )
        ref = (credential.get("spec") or {}).get("credentialsSecretRef") or {}
        keys = (str(ref.get("usernameKey") or "username"), str(ref.get("passwordKey") or "password"))
        return Scope(
            spec.select(namespaces),
            spec.credentials_namespace,
            spec.credentials_secret,
            keys,
            spec.secret_name,
        )

    def view(self, credential: Mapping[str, Any], namespace: str) -> dict[str, Any]:
        return namespaced_view(credential, namespace)

    def report(self, round_: Round, now: float) -> Report:
        if round_.problem is not None:
            error = round_.problem
            overall = Outcome(False, error.reason, error.message, failure=True)
            notes: tuple[Note, ...] = ()
            if error.reason != self.last_reason:
                notes = (Note("Warning", error.reason, error.message),)
            outcomes: Mapping[str, Outcome] = {}
        else:
            outcomes = {ns: round_.outcomes.get(ns, PENDING) for ns in round_.outcomes}
            overall = aggregate(outcomes, self.resumed)
            notes = tuple(fold_events((ns, n) for ns, batch in sorted(round_.notes.items()) for n in batch))
        context = StatusContext(
            round_.secret_name,
            round_.generation,
            round_.handled_request,
            self.ready,
            now,
            pending_request=round_.pending_request,
        )
        status = render_cluster_status(overall, outcomes, context)
        if round_.stale and set(round_.stale) >= set(outcomes):  # every namespace has been checked
            self.stale = stale_since(self.stale, aggregate_stale(round_.stale), now)
        if self.stale is not None and outcomes:
            fields, condition = cluster_consumers(*self.stale)
            status.update(fields)
            status["conditions"] = [*status["conditions"], condition]
        digest = status_digest(status)
        return Report(notes, None if digest == self.status_digest else status, overall, digest)

    def reported(self, report: Report) -> None:
        if report.status is not None:
            self.status_digest, self.ready = report.digest, ready_state(report.status)
        if report.overall is not None:
            self.last_reason = report.overall.reason

    def event_ref(self, credential: Mapping[str, Any]) -> ObjectRef:
        meta = credential["metadata"]
        return ObjectRef(
            "", meta["name"], meta["uid"], str(credential.get("apiVersion") or API_VERSION), self.kind
        )
