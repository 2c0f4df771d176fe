"""When to refresh and how long to back off. Pure arithmetic on plain numbers."""

from __future__ import annotations

import functools
import hashlib
import re

DEFAULT_REFRESH_FRACTION = 2 / 3
"""Refresh once this share of the lifetime has passed: 20 minutes of margin on a 1 h token,
far more than kubelet's 60-90 s delay in updating a mounted Secret."""

MAX_JITTER_FRACTION = 0.05
MAX_JITTER_SECONDS = 120.0
MIN_REFRESH_FRACTION = 0.1
"""A refreshBefore longer than the token lives would mean logging in non-stop; never refresh
earlier than this share of the lifetime."""

BACKOFF_BASE_SECONDS = 5.0
BACKOFF_CAP_SECONDS = 300.0
RETRY_AFTER_CAP_SECONDS = 3600.0
URGENT_FRACTION = 0.1
"""A token in the last tenth of its life (or expired, or none at all) makes its account's retries
urgent: a workload is about to hold, or already holds, a token that no longer works."""
URGENT_RETRY_CAP_SECONDS = 15.0
"""While urgent, retries for the account are at most this far apart instead of up to
BACKOFF_CAP_SECONDS, so a valid token is back within seconds of the Auth API's return; a
Retry-After still holds them back longer. One call per account all the same (auth/pool.py)."""

FORCED_REFRESH_WINDOW_SECONDS = 10.0
"""A refresh request (the refresh-requested-at annotation) forces a new token for its account at
most this often; requests that come within the window wait for its end, and the one call then
serves every request made before it started. So credentials sharing an account cannot turn
annotation edits into Auth API calls."""
REFRESH_REQUEST_INTERVAL_SECONDS = 60.0
"""At most one refresh request per credential is honoured this often: a newer value waits until
this long after the last honoured one, then is honoured (deferred, never dropped)."""


def jitter_fraction(key: str) -> float:
    """A stable value in [0, 1) per credential, so restarts and re-reconciles agree on the time."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def jitter_spread(lifetime: float) -> float:
    """How far before the planned time jitter may move a refresh."""
    return min(lifetime * MAX_JITTER_FRACTION, MAX_JITTER_SECONDS)


def refresh_time(
    obtained_at: float,
    expires_at: float,
    refresh_before: float | None,
    jitter: float,
) -> float:
    """The moment a token should be replaced: 2/3 into its life, or refresh_before ahead of expiry.

    Jitter only ever moves the time earlier, so it can never eat into the safety margin.
    """
    lifetime = max(expires_at - obtained_at, 0.0)
    if refresh_before is None:
        planned = obtained_at + lifetime * DEFAULT_REFRESH_FRACTION
    else:
        planned = expires_at - refresh_before
    spread = jitter_spread(lifetime) * jitter
    earliest = obtained_at + lifetime * MIN_REFRESH_FRACTION
    return max(planned - spread, earliest)


def backoff_delay(
    failures: int, jitter: float, retry_after: float | None = None, cap: float = BACKOFF_CAP_SECONDS
) -> float:
    """Exponential backoff with jitter for the n-th consecutive failure (n >= 1).

    The delay lies in [d/2, d) where d doubles from 5 s up to `cap` (5 min; URGENT_RETRY_CAP_SECONDS
    while the token is about to expire); a server's Retry-After is a floor, since retrying earlier
    only earns another 429.
    """
    exponent = max(failures - 1, 0)
    ceiling = min(BACKOFF_BASE_SECONDS * 2.0 ** min(exponent, 32), cap)
    delay = ceiling / 2 + ceiling / 2 * jitter
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP_SECONDS))
    return delay


def urgent_from(obtained_at: float, expires_at: float) -> float:
    """When a token enters the last URGENT_FRACTION of its life."""
    return expires_at - max(expires_at - obtained_at, 0.0) * URGENT_FRACTION


RESTORE_BACKOFF_CAP_SECONDS = 300.0
RESTORE_QUIET_SECONDS = 2 * RESTORE_BACKOFF_CAP_SECONDS
"""A Secret left alone this long after its last restore starts again with an immediate restore."""


def restore_delay(restores: int) -> float:
    """How long after the previous restore the next may be written: none for the first, then 1 s
    doubling to 5 min while someone keeps changing the Secret, so that one tenant cannot keep the
    operator's write slots busy."""
    if restores <= 0:
        return 0.0
    return min(2.0 ** min(restores - 1, 32), RESTORE_BACKOFF_CAP_SECONDS)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


@functools.lru_cache(maxsize=1024)
def parse_duration(text: str) -> float:
    """Parse a Kubernetes-style duration such as `15m`, `1h30m` or `90s` into seconds.

    Cached: every pass parses its credential's spec again, and the regex was 4 % of the
    operator's CPU in a first sync of 2,000 (py-spy). Callers bound the text's length first
    (spec.py), and the cache its count, so a tenant's odd durations cost at most 1,024 entries."""
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(f"{text!r} is not a duration like 15m, 1h30m or 90s")
    return total
