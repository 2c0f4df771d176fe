"""What a ClusterSimacanCredential's user reads: one status and a few Events for all its namespaces.

Pure. Each namespace's pass concludes with an Outcome; this module folds them into one Ready
condition (True only when every selected namespace holds a valid token), counts, a capped list
of the namespaces that lack one, and the earliest expiry and refresh. Events of many namespaces
with the same reason become one Event naming them.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from simacan_token_operator.model import reasons
from simacan_token_operator.model.limits import (
    MAX_CONDITION_MESSAGE_CHARS,
    MAX_FAILED_NAMESPACE_MESSAGE_CHARS,
    MAX_STALE_CONSUMERS_LISTED,
    shortened,
)
from simacan_token_operator.model.tokens import TokenSet
from simacan_token_operator.reconcile.report import Note
from simacan_token_operator.reconcile.status import Outcome, StatusContext, common_status
from simacan_token_operator.reconcile.tokensecret import parse_rfc3339, rfc3339

NO_NAMESPACES = "NoNamespaces"
FAILED_LIST_CAP = 20
"""failedNamespaces lists at most this many (the status of thousands would be a large object);
failedCount always has the full number."""
NAMED_IN_EVENT = 5
PENDING = Outcome(False, "Pending", "not served yet", failure=True)
"""A selected namespace whose first pass has not succeeded (e.g. its Secret could not be read)."""


Resumed = tuple[TokenSet, float | None]
"""The token times, subject and next refresh the last status reported."""


def aggregate(outcomes: Mapping[str, Outcome], resumed: Resumed | None = None) -> Outcome:
    """One Outcome for the whole selection; its token is the operator's own expiring first.

    Only tokens this process obtained count (`Outcome.own`): a token adopted from a selected
    namespace's Secret may have been written by that namespace's tenant, and must not decide the
    subject, expiry and metrics the platform team reads. Until the first own token (after a
    restart), `resumed` is what the last status said.
    """
    if not outcomes:
        return Outcome(True, NO_NAMESPACES, "no namespace is selected (namespaceSelector, namespaces)")
    failed = sorted(ns for ns, outcome in outcomes.items() if not outcome.ready)
    tokens = [o.token for o in outcomes.values() if o.token is not None and o.own]
    refreshes = [o.next_refresh for o in outcomes.values() if o.next_refresh is not None and o.own]
    first = min(tokens, key=lambda token: token.expires_at) if tokens else None
    if not tokens and resumed is not None:
        first, refreshes = resumed[0], [r for r in resumed[1:] if r is not None]
    wakes = [o.wake_at for o in outcomes.values() if o.wake_at is not None]
    common = Outcome(
        True,
        reasons.TOKEN_VALID,
        "",
        token=first,
        next_refresh=min(refreshes) if refreshes else None,
        wake_at=min(wakes) if wakes else None,
        failure=any(o.failure for o in outcomes.values()),
    )
    if failed:
        reason, _ = Counter(outcomes[ns].reason for ns in failed).most_common(1)[0]
        shown = ", ".join(f"{ns} ({outcomes[ns].reason})" for ns in failed[:NAMED_IN_EVENT])
        more = f" and {len(failed) - NAMED_IN_EVENT} more" if len(failed) > NAMED_IN_EVENT else ""
        message = f"{len(failed)} of {len(outcomes)} namespaces hold no valid token: {shown}{more}"
        return dataclasses.replace(common, ready=False, reason=reason, message=message)
    troubled = sorted(ns for ns, o in outcomes.items() if o.failure)
    if troubled:
        reason = outcomes[troubled[0]].reason
        message = (
            f"all {len(outcomes)} namespaces hold a valid token, but {len(troubled)} could not get a new one "
            f"({troubled[0]}: {outcomes[troubled[0]].message})"
        )
        return dataclasses.replace(common, reason=reason, message=message)
    if all(o.reason == reasons.SUSPENDED for o in outcomes.values()):
        return dataclasses.replace(
            common, reason=reasons.SUSPENDED, message="refreshing is suspended (spec.suspend)"
        )
    expiry = f"; the first expires at {rfc3339(first.expires_at)}" if first else ""
    message = f"all {len(outcomes)} selected namespaces hold a valid token{expiry}"
    return dataclasses.replace(common, message=message)


def resumed(status: Mapping[str, Any]) -> Resumed | None:
    """What the last status reported of the token, as a token without its value."""
    expires_at, obtained_at = parse_rfc3339(status.get("expiresAt")), parse_rfc3339(status.get("refreshedAt"))
    if expires_at is None or obtained_at is None:
        return None
    subject = status.get("subject")
    token = TokenSet("", None, obtained_at, expires_at, subject=subject if isinstance(subject, str) else None)
    return token, parse_rfc3339(status.get("nextRefreshAt"))


def render_cluster_status(
    overall: Outcome, outcomes: Mapping[str, Outcome], context: StatusContext
) -> dict[str, Any]:
    """None deletes a field in the merge patch."""
    failed = sorted(ns for ns, outcome in outcomes.items() if not outcome.ready)
    return {
        **common_status(overall, context),
        "namespaces": len(outcomes),
        "failedCount": len(failed),
        "failedNamespaces": [
            {
                "namespace": ns,
                "reason": outcomes[ns].reason,
                "message": shortened(outcomes[ns].message, MAX_FAILED_NAMESPACE_MESSAGE_CHARS),
            }
            for ns in failed[:FAILED_LIST_CAP]
        ],
    }


StaleSummary = tuple[tuple[str, ...], int]
"""The first stale consumers named (`namespace/Kind/name`) and how many there are."""


def aggregate_stale(stale: Mapping[str, StaleSummary]) -> StaleSummary:
    """One summary for all the namespaces' summaries."""
    names = sorted(f"{ns}/{name}" for ns, (listed, _) in stale.items() for name in listed)
    return tuple(names[:MAX_STALE_CONSUMERS_LISTED]), sum(count for _, count in stale.values())


def stale_since(
    previous: tuple[StaleSummary, str] | None, summary: StaleSummary, now: float
) -> tuple[StaleSummary, str]:
    """The summary and since when it holds: the condition's lastTransitionTime moves only when
    the set of stale consumers changes."""
    if previous is not None and previous[0] == summary:
        return previous
    return summary, rfc3339(now)


def stale_from_status(status: Mapping[str, Any]) -> tuple[StaleSummary, str] | None:
    """What the last status said, so that a restarted operator reports it unchanged."""
    names, count = status.get("staleConsumers"), status.get("staleConsumerCount")
    condition = next(
        (c for c in status.get("conditions") or [] if c.get("type") == reasons.CONSUMERS_STALE), None
    )
    if not isinstance(names, list) or not isinstance(count, int) or condition is None:
        return None
    return (tuple(str(n) for n in names), count), str(condition.get("lastTransitionTime"))


def cluster_consumers(summary: StaleSummary, since: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """staleConsumers and staleConsumerCount, and the ConsumersStale condition, for every selected
    namespace together."""
    names, count = summary
    more = count - len(names)
    shown = ", ".join(names) + (f" and {more} more" if more else "")
    message = (
        f"{shown} keep their first token until restarted; mount the whole Secret as a volume"
        if count
        else "no workload in the selected namespaces reads the token only at start"
    )
    condition = {
        "type": reasons.CONSUMERS_STALE,
        "status": "True" if count else "False",
        "reason": reasons.READS_AT_START if count else reasons.NO_STALE_CONSUMERS,
        "message": shortened(message, MAX_CONDITION_MESSAGE_CHARS),
        "lastTransitionTime": since,
    }
    return {"staleConsumers": list(names), "staleConsumerCount": count}, condition


def fold_events(notes: Iterable[tuple[str, Note]]) -> list[Note]:
    """(namespace, Event) pairs to post on the ClusterSimacanCredential: one per type and reason."""
    grouped: defaultdict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for namespace, note in notes:
        grouped[note.type, note.reason].append((namespace, note.message))
    folded = []
    for (type_, reason), items in grouped.items():
        items.sort()
        if len(items) == 1:
            message = f"namespace {items[0][0]}: {items[0][1]}"
        else:
            names = ", ".join(ns for ns, _ in items[:NAMED_IN_EVENT])
            more = f" and {len(items) - NAMED_IN_EVENT} more" if len(items) > NAMED_IN_EVENT else ""
            message = f"{len(items)} namespaces ({names}{more}): {items[0][1]}"
        folded.append(Note(type_, reason, message))
    return folded
