"""What a user is told besides the status: Events on the SimacanCredential, and metrics.

Pure decisions (which Events) and the shape of the metrics an outcome is published to. Status
rendering lives in status.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from simacan_token_operator.model import reasons
from simacan_token_operator.reconcile.status import Outcome
from simacan_token_operator.reconcile.triggers import Trigger


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
    if trigger.reason in reasons.ROUTINE or trigger.quiet:
        return ()
    return (Note("Normal", trigger.reason, trigger.message),)


class MetricsSink(Protocol):
    """What the workers report to (app.metrics.Metrics): kept a Protocol so the pure layers never
    import the metrics library."""

    def publish(self, namespace: str, name: str, outcome: Outcome, attempt: str | None) -> None: ...
    def count_attempt(self, attempt: str) -> None: ...
    def forget(self, namespace: str, name: str) -> None: ...
