"""What a reader of the token Secrets saw: how long each held an expired token, and how late each fix came.

Pure functions over what the reader recorded (when it saw which token in which Secret), so the figures
can be checked with plain values. A Secret holds the token it was last seen with until it is seen again;
between the token's expiry and the next sighting of a different token it holds an expired one.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sighting:
    """The reader saw Secret `name` at wall time `at` holding a token that expires at `expires_at`.

    `expires_at` is None when the Secret was deleted or held no readable token.
    """

    name: str
    at: float
    expires_at: float | None


@dataclass(frozen=True)
class Exposure:
    """The reader's figures for one contender over [started_at, ended_at]."""

    expected: int
    existed: int  # Secrets that held a token at some point
    all_exist_after: float | None  # seconds from start until every Secret held a token; None: never
    held_seconds: float  # Secret-seconds with a token in it (expired or not)
    expired_seconds: float  # Secret-seconds with an expired token in it
    late_episodes: int  # times a Secret's token expired before it was replaced
    worst_lateness: float  # longest time from a token's expiry to its replacement (or the end)
    timeline: tuple[tuple[float, int, int], ...]  # (seconds from start, holding expired, without token)
    first_sync_rate: float | None = None  # Secrets per second over the middle 80 % of the first sync

    @property
    def expired_share(self) -> float:
        return self.expired_seconds / self.held_seconds if self.held_seconds > 0 else 0.0


@dataclass(frozen=True)
class _Span:
    start: float
    end: float
    expires_at: float | None


def analyse(
    sightings: Iterable[Sighting],
    names: Sequence[str],
    started_at: float,
    ended_at: float,
    step: float = 1.0,
) -> Exposure:
    """Turn sightings into exposure figures and a timeline sampled every `step` seconds."""
    by_name: dict[str, list[Sighting]] = {name: [] for name in names}
    for sighting in sightings:
        if sighting.name in by_name and sighting.at <= ended_at:
            by_name[sighting.name].append(sighting)
    spans = {name: _spans(sorted(seen, key=lambda s: s.at), ended_at) for name, seen in by_name.items()}

    held = expired = worst = 0.0
    episodes = 0
    first_held: list[float] = []
    for name_spans in spans.values():
        holding = [span for span in name_spans if span.expires_at is not None]
        if holding:
            first_held.append(holding[0].start)
        for span in holding:
            assert span.expires_at is not None
            held += span.end - span.start
            if span.expires_at < span.end:
                expired += span.end - max(span.start, span.expires_at)
                episodes += 1
                worst = max(worst, span.end - span.expires_at)

    all_exist_after = max(first_held) - started_at if len(first_held) == len(names) and names else None
    return Exposure(
        expected=len(names),
        existed=len(first_held),
        all_exist_after=all_exist_after,
        held_seconds=held,
        expired_seconds=expired,
        late_episodes=episodes,
        worst_lateness=worst,
        timeline=_timeline(spans, started_at, ended_at, step),
        first_sync_rate=first_sync_rate(first_held),
    )


def first_sync_rate(first_held: Sequence[float]) -> float | None:
    """Secret writes per second while the first sync wrote: from the 10th to the 90th percentile of
    the moments each Secret first held a token, so neither a contender's start-up (imports, lists)
    nor its last stragglers count. Issue 22 compares ours with the plain loop's in the same run.
    None for fewer than 10 Secrets, or when they all came within one instant."""
    if len(first_held) < 10:
        return None
    times = sorted(first_held)
    low, high = len(times) // 10, (len(times) * 9) // 10 - 1
    span = times[high] - times[low]
    return (high - low) / span if span > 0 else None


def _spans(seen: Sequence[Sighting], ended_at: float) -> list[_Span]:
    """Consecutive spans of one token each; repeated sightings of the same token extend its span."""
    spans: list[_Span] = []
    for index, sighting in enumerate(seen):
        end = seen[index + 1].at if index + 1 < len(seen) else ended_at
        if spans and spans[-1].expires_at == sighting.expires_at and spans[-1].end == sighting.at:
            spans[-1] = _Span(spans[-1].start, end, sighting.expires_at)
        else:
            spans.append(_Span(sighting.at, end, sighting.expires_at))
    return spans


def _timeline(
    spans: dict[str, list[_Span]], started_at: float, ended_at: float, step: float
) -> tuple[tuple[float, int, int], ...]:
    starts = {name: [span.start for span in name_spans] for name, name_spans in spans.items()}
    points: list[tuple[float, int, int]] = []
    at = started_at
    while at <= ended_at:
        expired = missing = 0
        for name, name_spans in spans.items():
            index = bisect.bisect_right(starts[name], at) - 1
            current = name_spans[index].expires_at if index >= 0 else None
            if current is None:
                missing += 1
            elif current <= at:
                expired += 1
        points.append((round(at - started_at, 3), expired, missing))
        at += step
    return tuple(points)
