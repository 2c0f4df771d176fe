"""The status a user reads: one Ready condition plus the token's times, derived from an Outcome.

Pure: the reconciler decides what happened; this module only says how it looks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from simacan_token_operator.model.limits import MAX_CONDITION_MESSAGE_CHARS, shortened
from simacan_token_operator.model.tokens import TokenSet
from simacan_token_operator.reconcile.tokensecret import rfc3339

READY = "Ready"


@dataclass(frozen=True, slots=True)
class ReadyState:
    """What the previous status said of Ready: enough to keep lastTransitionTime when it stays."""

    status: str
    since: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one reconcile pass concluded: the Ready condition, the token in the Secret, when to look again."""

    ready: bool
    reason: str
    message: str
    token: TokenSet | None = None
    next_refresh: float | None = None
    wake_at: float | None = None
    failure: bool = False
    own: bool = False
    """Whether `token` came from this process's pool, rather than being adopted from a Secret
    (which a tenant may have written): a ClusterSimacanCredential reports only such tokens."""


@dataclass(frozen=True)
class StatusContext:
    """What a status says besides the outcome: the same for either kind's status."""

    secret_name: str | None
    generation: int | None
    handled_request: str | None
    previous: ReadyState | None
    """The Ready condition last written, to keep its lastTransitionTime while it holds."""
    now: float
    pending_request: str | None = None
    """A refresh-requested-at value not yet honoured: it waits for the limits on refresh requests."""


def render_status(
    outcome: Outcome,
    context: StatusContext,
    conditions: Sequence[Mapping[str, Any]] = (),
    fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """None values are deliberate: in a merge patch they delete fields that no longer apply.

    `conditions` and `fields` are the consumer step's part, placed after Ready and the token's.
    """
    token = outcome.token
    fingerprint = token_fingerprint(token.access_token) if token else None
    status = {**common_status(outcome, context), "tokenFingerprint": fingerprint, **(fields or {})}
    status["conditions"] = [*status["conditions"], *conditions]
    return status


def common_status(outcome: Outcome, context: StatusContext) -> dict[str, Any]:
    """What the status of either kind says of its (first) token and its Ready condition."""
    state = "True" if outcome.ready else "False"
    previous = context.previous
    transition = previous.since if previous is not None and previous.status == state else rfc3339(context.now)
    token = outcome.token
    return {
        "observedGeneration": context.generation,
        "secretName": context.secret_name,
        "expiresAt": rfc3339(token.expires_at) if token else None,
        "refreshedAt": rfc3339(token.obtained_at) if token else None,
        "nextRefreshAt": rfc3339(outcome.next_refresh) if outcome.next_refresh else None,
        "subject": token.subject if token else None,
        "lastRefreshRequest": context.handled_request,
        "pendingRefreshRequest": context.pending_request,
        "conditions": [
            {
                "type": READY,
                "status": state,
                "reason": outcome.reason,
                "message": shortened(outcome.message, MAX_CONDITION_MESSAGE_CHARS),
                "observedGeneration": context.generation,
                "lastTransitionTime": transition,
            }
        ],
    }


def token_fingerprint(access_token: str) -> str:
    """Tells two tokens apart in status and the demo's view without revealing either."""
    return hashlib.sha256(access_token.encode()).hexdigest()[:12]


def present(status: Mapping[str, Any]) -> dict[str, Any]:
    """Status as the server stores it: a merge patch deletes keys whose value is null."""
    return {key: value for key, value in status.items() if value is not None}


def ready_condition(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for condition in status.get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == READY:
            return condition
    return None


def ready_reason(status: Mapping[str, Any]) -> str | None:
    reason = (ready_condition(status) or {}).get("reason")
    return reason if isinstance(reason, str) else None


def status_digest(status: Mapping[str, Any]) -> str:
    """What a worker remembers of the status it wrote: a digest, not thousands of dicts."""
    return hashlib.sha256(json.dumps(present(status), sort_keys=True).encode()).hexdigest()[:16]


def ready_state(status: Mapping[str, Any]) -> ReadyState | None:
    condition = ready_condition(status)
    if condition is None:
        return None
    state, since = condition.get("status"), condition.get("lastTransitionTime")
    if not isinstance(state, str) or not isinstance(since, str):
        return None
    return ReadyState(state, since)
