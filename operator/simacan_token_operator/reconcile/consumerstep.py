"""The consumer step of a pass: who reads the token, and who must be restarted to load a new one.

It runs after the token step (decide.py), from what that step concluded (the token now in the
Secret and when to look again), and keeps its own slice of the remembered state
(`ConsumerMemory`). It adds conditions and fields to the status; it never changes the Ready
condition. Restart targets are namespaced-only: a ClusterSimacanCredential would need patch
rights on workloads in every namespace it selects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from simacan_token_operator.model import limits, reasons
from simacan_token_operator.model.spec import CredentialSpec, RestartTarget
from simacan_token_operator.model.tokens import TokenSet
from simacan_token_operator.reconcile import consumers, report, tokensecret
from simacan_token_operator.reconcile.tokensecret import rfc3339

RESTART_RETRY_SECONDS = 300.0
"""A restart target the operator may not read or patch (HTTP 403) is tried again this often, so a
grant added later (manifests/components/rollout-restarts) takes effect without an edit."""

STALE_LISTED = limits.MAX_STALE_CONSUMERS_LISTED
"""Stale consumers named in the status, the condition and the Event; the rest are counted."""
MESSAGE_LIMIT = limits.MAX_CONDITION_MESSAGE_CHARS


@dataclass(frozen=True)
class RestartRefused:
    """The API server refused a verb on a restart target (HTTP 403): the grant is missing."""

    verb: str
    """get (reading it) or patch (restarting it)."""
    at: float
    """When: a refused patch is tried again RESTART_RETRY_SECONDS later."""


@dataclass(frozen=True, slots=True)
class RestartsCondition:
    """The RolloutRestarts condition last written: its Warning fires when the message changes."""

    status: str
    message: str
    since: str

    @classmethod
    def from_condition(cls, condition: Mapping[str, Any] | None) -> RestartsCondition | None:
        if condition is None:
            return None
        status, message, since = (condition.get(k) for k in ("status", "message", "lastTransitionTime"))
        if isinstance(status, str) and isinstance(message, str) and isinstance(since, str):
            return cls(status, message, since)
        return None


@dataclass(frozen=True, slots=True)
class ConsumerMemory:
    """What the consumer step remembers between passes; a restart starts from the status."""

    stale_consumers: tuple[str, ...] | None = None
    """Workloads last reported as reading the token only at start (the first STALE_LISTED of
    them); None before the first check."""
    stale_count: int = 0
    """How many there were in all."""
    stale_since: str | None = None
    missing_targets: tuple[str, ...] = ()
    """Restart targets last reported as missing."""
    restarts: RestartsCondition | None = None
    """The RolloutRestarts condition last written; None when the spec has no restart targets."""

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> ConsumerMemory:
        stale = status.get("staleConsumers")
        count = status.get("staleConsumerCount")
        conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, Mapping)}
        return cls(
            stale_consumers=tuple(stale) if isinstance(stale, list) else None,
            stale_count=count if isinstance(count, int) else len(stale) if isinstance(stale, list) else 0,
            stale_since=(conditions.get(reasons.CONSUMERS_STALE) or {}).get("lastTransitionTime"),
            restarts=RestartsCondition.from_condition(conditions.get(reasons.ROLLOUT_RESTARTS)),
        )


@dataclass(frozen=True)
class Consumers:
    """The consumers as gathered before the pass."""

    workloads: Mapping[RestartTarget, Mapping[str, Any] | None] = field(default_factory=dict)
    """The spec's restart targets as read (None: not found)."""
    survey: consumers.Survey | None = None
    """The verdicts on the namespace's workloads, for the stale-consumer check; None when unknown."""
    refused: Mapping[RestartTarget, RestartRefused] = field(default_factory=dict)
    """Restart targets the API server refused to us: get in this gather, patch in an earlier restart."""


@dataclass(frozen=True)
class WorkloadRestart:
    target: RestartTarget
    resource_version: str
    at: str
    """The new value of the restartedAt annotation."""
    done: report.Note
    """The Event to post once the restart happened."""


@dataclass(frozen=True)
class ConsumerStep:
    """What the step decided: restarts to perform, Events, and its part of the status."""

    memory: ConsumerMemory
    restarts: tuple[WorkloadRestart, ...] = ()
    events: tuple[report.Note, ...] = ()
    conditions: tuple[dict[str, Any], ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)
    """Status fields besides the conditions: restarts, staleConsumers, staleConsumerCount."""
    wake_at: float | None = None
    """When the step needs another pass (a postponed or refused restart), or None."""


def step(
    spec: CredentialSpec, token: TokenSet | None, gathered: Consumers, memory: ConsumerMemory, now: float
) -> ConsumerStep:
    """Restart targets that hold an older token than the Secret's, and workloads that would.

    Level-based: a target is due while its last restart (or its creation) predates the token
    in the Secret, so an operator restart, a leader change or a no-op pass restarts nothing,
    and a restart missed by a crash happens on the next pass.
    """
    events: list[report.Note] = []
    missing = tuple(str(t) for t, body in gathered.workloads.items() if body is None)
    if missing and missing != memory.missing_targets:
        message = (
            f"rolloutRestartTargets {', '.join(missing)} not found in namespace {spec.namespace}; "
            "the token is kept up to date, but nothing is restarted"
        )
        events.append(report.Note("Warning", reasons.RESTART_TARGET_NOT_FOUND, message))
    memory = dataclasses.replace(memory, missing_targets=missing)
    restarts, listed, refused, wake_at = _due_restarts(spec, token, gathered, now)

    stale_events, stale_condition, stale_fields, memory = _stale_consumers(gathered.survey, spec, memory, now)
    events.extend(stale_events)
    pending = any(r.target not in gathered.refused for r in restarts)
    permission_events, permission, memory = _restart_permission(spec, memory, refused, pending, now)
    events.extend(permission_events)
    for refusal in refused.values():
        retry = refusal.at + RESTART_RETRY_SECONDS
        retry = retry if now < retry else now + RESTART_RETRY_SECONDS
        wake_at = retry if wake_at is None else min(wake_at, retry)
    conditions = tuple(c for c in (stale_condition, permission) if c is not None)
    fields = {"restarts": listed or None, **stale_fields}
    return ConsumerStep(memory, tuple(restarts), tuple(events), conditions, fields, wake_at)


def _due_restarts(
    spec: CredentialSpec, token: TokenSet | None, gathered: Consumers, now: float
) -> tuple[list[WorkloadRestart], list[dict[str, str]], dict[RestartTarget, RestartRefused], float | None]:
    """The restarts to perform now, the targets' last restarts, the refusals, and when to look again."""
    restarts: list[WorkloadRestart] = []
    listed: list[dict[str, str]] = []
    refused = {t: r for t, r in gathered.refused.items() if r.verb == "get"}
    wake_at: float | None = None
    for target in spec.restart_targets:
        body = gathered.workloads.get(target)
        if body is None:
            continue
        last = consumers.restarted_at(body)
        if last is not None:
            listed.append({"kind": target.kind, "name": target.name, "restartedAt": rfc3339(last)})
        since = consumers.holds_token_since(body)
        if token is None or (since is not None and since >= token.obtained_at):
            continue
        if last is not None and now < last + spec.min_restart_interval:
            allowed = last + spec.min_restart_interval  # postponed, never dropped
            wake_at = allowed if wake_at is None else min(wake_at, allowed)
            continue
        refusal = gathered.refused.get(target)
        if refusal is not None:  # a refused patch: reported, and tried again now and then
            refused[target] = refusal
            if now < refusal.at + RESTART_RETRY_SECONDS:
                continue
        version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        # Not before the token's arrival, which may follow the pass's start; a millisecond up
        # because the annotation keeps milliseconds: otherwise the target stays due.
        at = max(now, token.obtained_at) + 0.001
        # Announced, and listed in status.restarts by the next pass, once it happened: a patch
        # may be refused (403).
        done = report.Note("Normal", reasons.ROLLOUT_RESTARTED, f"restarted {target} to load the new token")
        restarts.append(WorkloadRestart(target, version, tokensecret.rfc3339_precise(at), done))
    return restarts, listed, refused, wake_at


def _stale_consumers(
    survey: consumers.Survey | None, spec: CredentialSpec, memory: ConsumerMemory, now: float
) -> tuple[list[report.Note], dict[str, Any] | None, dict[str, Any], ConsumerMemory]:
    """The ConsumersStale condition, and a Warning when the set of stale consumers changes.

    A namespace may hold thousands of such workloads: status, condition and Event name the
    first STALE_LISTED (sorted) and count the rest, so the status patch stays small."""
    events: list[report.Note] = []
    if survey is None:
        if memory.stale_consumers is None:
            return events, None, {}, memory
        # What the last status said (an older operator's may name more than STALE_LISTED).
        listed, count, partial = memory.stale_consumers[:STALE_LISTED], memory.stale_count, False
    else:
        found = consumers.stale(survey.verdicts, spec.target_secret, spec.restart_targets)
        listed, count, partial = found[:STALE_LISTED], len(found), survey.partial
    stale_since = memory.stale_since
    note = (
        "; the check is partial: the namespace has more workloads than the operator keeps verdicts on"
        if partial
        else ""
    )
    if (listed, count) != (memory.stale_consumers, memory.stale_count) or stale_since is None:
        stale_since = rfc3339(now)
        if count:
            rest = (
                f" read Secret {spec.target_secret} through an env var or a subPath mount and keep "
                "their first token until restarted; mount the whole Secret as a volume or list them "
                f"in spec.rolloutRestartTargets{note}"
            )
            message = _named(listed, count, MESSAGE_LIMIT - len(rest)) + rest
            events.append(report.Note("Warning", reasons.CONSUMERS_STALE, message))
    if count:
        rest = f" keep their first token until restarted{note}"
        message = _named(listed, count, MESSAGE_LIMIT - len(rest)) + rest
    else:
        checked = "the operator checked " if partial else ""
        message = f"no workload {checked}reads Secret {spec.target_secret} only at start{note}"
    condition = {
        "type": reasons.CONSUMERS_STALE,
        "status": "True" if count else "False",
        "reason": reasons.READS_AT_START if count else reasons.NO_STALE_CONSUMERS,
        "message": message,
        "lastTransitionTime": stale_since,
    }
    fields = {"staleConsumers": list(listed), "staleConsumerCount": count}
    memory = dataclasses.replace(memory, stale_consumers=listed, stale_count=count, stale_since=stale_since)
    return events, condition, fields, memory


def _restart_permission(
    spec: CredentialSpec,
    memory: ConsumerMemory,
    refused: Mapping[RestartTarget, RestartRefused],
    pending: bool,
    now: float,
) -> tuple[tuple[report.Note, ...], dict[str, Any] | None, ConsumerMemory]:
    """The RolloutRestarts condition, and one Warning when the set of refusals changes.

    `pending`: a restart is about to be tried whose permission is unknown (the first try, or the
    first after an operator restart). The condition stays as it was until the worker's next pass,
    which knows: so a change makes one Warning, not one per piece learnt.
    """
    if not spec.restart_targets:
        return (), None, dataclasses.replace(memory, restarts=None)
    previous = memory.restarts
    if pending:
        if previous is None:
            return (), None, memory
        current = previous
    elif refused:
        verbs = ", ".join(f"{refused[t].verb} {t}" for t in sorted(refused, key=str))
        message = (
            f"not permitted (HTTP 403): {verbs}; the token Secret is kept up to date, but these "
            "rolloutRestartTargets are not restarted. To allow restarts, add the component "
            "manifests/components/rollout-restarts to the operator's install (it grants patch on "
            "Deployments, StatefulSets and DaemonSets; get comes with the default install). "
            f"Tried again every {RESTART_RETRY_SECONDS / 60:.0f} minutes."
        )
        current = RestartsCondition("False", message, _since(previous, "False", now))
    else:
        message = "every restart target could be read and no restart was refused"
        current = RestartsCondition("True", message, _since(previous, "True", now))
    events: tuple[report.Note, ...] = ()
    if current.status == "False" and (previous is None or previous.message != current.message):
        events = (report.Note("Warning", reasons.RESTART_NOT_PERMITTED, current.message),)
    condition = {
        "type": reasons.ROLLOUT_RESTARTS,
        "status": current.status,
        "reason": reasons.RESTARTS_PERMITTED if current.status == "True" else reasons.RESTART_NOT_PERMITTED,
        "message": current.message,
        "lastTransitionTime": current.since,
    }
    return events, condition, dataclasses.replace(memory, restarts=current)


def _since(previous: RestartsCondition | None, status: str, now: float) -> str:
    return previous.since if previous is not None and previous.status == status else rfc3339(now)


def _named(names: Sequence[str], count: int, budget: int) -> str:
    """`A, B and 3 more`: the names in order while they fit in `budget` characters."""
    shown: list[str] = []
    for name in names:
        more = count - len(shown) - 1
        tail = f" and {more} more" if more else ""
        if len(", ".join([*shown, name]) + tail) > budget:
            break
        shown.append(name)
    if not shown:
        return f"{count} workload{'s' if count != 1 else ''}"
    more = count - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")
