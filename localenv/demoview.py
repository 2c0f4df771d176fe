"""What the demo shows every second, and whether what it saw counts as working.

Pure: the demo hands in what it read (a status Snapshot, the Auth API's call counts, the clock)
and gets lines back. The credential rows and Events come from the operator's own `status`
rendering (statusview), so the demo shows exactly what `simacan-token-operator status` shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from simacan_token_operator.app.statusview import (
    CredentialView,
    EventView,
    Snapshot,
    human_duration,
    render_events,
    render_table,
)

EVENTS_SHOWN = 6


@dataclass(frozen=True)
class AuthCalls:
    """Calls to the Auth API so far, as the fake Auth API or the operator's metrics count them."""

    logins: int
    refreshes: int
    failed: int

    def describe(self) -> str:
        total = self.logins + self.refreshes
        return (
            f"{total} ({self.logins} password login{'s' if self.logins != 1 else ''}, "
            f"{self.refreshes} refresh{'es' if self.refreshes != 1 else ''}; {self.failed} failed)"
        )


@dataclass
class Progress:
    """Tokens seen per credential, by fingerprint: a new fingerprint after the first is a refresh."""

    fingerprints: dict[str, list[str]] = field(default_factory=dict)
    first_token_at: float | None = None
    seen_events: set[tuple[str, str, int]] = field(default_factory=set)

    def observe(self, credentials: Sequence[CredentialView], now: float) -> None:
        for credential in credentials:
            seen = self.fingerprints.setdefault(credential.name, [])
            if credential.fingerprint and (not seen or seen[-1] != credential.fingerprint):
                seen.append(credential.fingerprint)
                if self.first_token_at is None:
                    self.first_token_at = now

    @property
    def refreshes(self) -> int:
        return sum(max(0, len(seen) - 1) for seen in self.fingerprints.values())

    def without_token(self, names: Sequence[str]) -> list[str]:
        return [name for name in names if not self.fingerprints.get(name)]

    def new_events(self, events: Sequence[EventView]) -> list[EventView]:
        """Events not printed yet; a repeat that bumps an Event's count is new again."""
        fresh = []
        for event in sorted(events, key=lambda e: e.last_seen or 0.0):
            key = (event.object_uid or event.object_name, event.reason + event.message, event.count)
            if key not in self.seen_events:
                self.seen_events.add(key)
                fresh.append(event)
        return fresh


def verdict(progress: Progress, credentials: Sequence[CredentialView]) -> tuple[bool, str]:
    """The headless run's pass/fail: every credential got a token, one was refreshed, all Ready."""
    names = [c.name for c in credentials]
    if not names:
        return False, "no SimacanCredentials found"
    problems = []
    missing = progress.without_token(names)
    if missing:
        problems.append(f"no token for {', '.join(missing)}")
    if progress.refreshes == 0:
        problems.append("no refresh happened")
    not_ready = [f"{c.name} ({c.ready}, {c.reason})" for c in credentials if not c.is_ready]
    if not_ready:
        problems.append(f"not Ready at the end: {', '.join(not_ready)}")
    if problems:
        return False, "; ".join(problems)
    return True, f"{len(names)} credentials got tokens; {progress.refreshes} refreshes seen"


def render_screen(
    header: Sequence[str],
    snapshot: Snapshot,
    calls: AuthCalls | None,
    footer: Sequence[str],
    now: float,
) -> list[str]:
    """The interactive view, redrawn every second."""
    lines = [*header, ""]
    if snapshot.credentials:
        lines += render_table(snapshot.credentials, now)
    else:
        lines.append("(no SimacanCredentials yet)")
    lines += ["", f"Auth API calls so far: {calls.describe() if calls else 'unknown'}", ""]
    if snapshot.events_error:
        lines.append(f"Events: ({snapshot.events_error})")
    elif snapshot.events:
        recent = sorted(snapshot.events, key=lambda e: e.last_seen or 0.0)[-EVENTS_SHOWN:]
        lines += ["Recent Events:", *("  " + line for line in render_events(recent, now, objects=True))]
    else:
        lines.append("Events: none yet")
    return [*lines, "", *footer]


def render_plain(
    elapsed: float,
    snapshot: Snapshot,
    calls: AuthCalls | None,
    new_events: Sequence[EventView],
    now: float,
) -> list[str]:
    """The headless view: the same rows as plain lines, prefixed with the time since the operator
    started; `calls` only when they changed (None: no line)."""
    stamp = f"[t+{human_duration(elapsed):>6}]"
    table = render_table(snapshot.credentials, now)[1:] if snapshot.credentials else ["(no credentials)"]
    lines = [f"{stamp} {row}" for row in table]
    if calls is not None:
        lines.append(f"{stamp} Auth API calls: {calls.describe()}")
    for line in render_events(new_events, now, objects=True)[1:] if new_events else []:
        lines.append(f"{stamp} event: {line}")
    return lines
