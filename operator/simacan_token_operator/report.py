"""What a user is told besides the status: Events on the SimacanCredential, and metrics.

Pure decisions (which Events) plus one function that publishes an outcome's metrics. Status
rendering lives in status.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import reasons
from .metrics import Metrics
from .status import Outcome
from .triggers import Trigger


@dataclass(frozen=True)
class Note:
    """An Event to post: `type` is Normal or Warning, as `kubectl describe` shows it."""

    type: str
    reason: str
    message: str


def problem_events(outcome: Outcome, last_reason: str | None) -> tuple[Note, ...]:
    """A problem is announced once when it appears, not on every retry."""
    if outcome.failure and outcome.reason != last_reason:
        return (Note("Warning", outcome.reason, outcome.message),)
    return ()


def write_events(trigger: Trigger, last_reason: str | None) -> tuple[Note, ...]:
    """Why a new Secret was written; routine refreshes stay quiet."""
    if last_reason is None:
        return (Note("Normal", reasons.ISSUED, "issued the first token"),)
    if last_reason not in reasons.HEALTHY:
        message = f"{trigger.message}; the previous problem ({last_reason}) is resolved"
        return (Note("Normal", reasons.RECOVERED, message),)
    if trigger.reason in reasons.ROUTINE:
        return ()
    return (Note("Normal", trigger.reason, trigger.message),)


def publish(metrics: Metrics, namespace: str, name: str, outcome: Outcome, attempt: str | None) -> None:
    labels = (namespace, name)
    metrics.ready.labels(*labels).set(1 if outcome.ready else 0)
    metrics.failing.labels(*labels).set(1 if outcome.failure else 0)
    if outcome.token is not None:
        metrics.expiry.labels(*labels).set(outcome.token.expires_at)
        metrics.issued.labels(*labels).set(outcome.token.obtained_at)
    if outcome.next_refresh is not None:
        metrics.next_refresh.labels(*labels).set(outcome.next_refresh)
    if attempt is not None:
        metrics.refreshes.labels(attempt).inc()
