"""One token per login source, shared by every SimacanCredential that uses it.

N credentials with the same Auth URL, username and password cost one Auth API call per
token lifetime: the first credential due for a refresh fetches a new pair (single flight,
under a per-source lock) and the others find it fresh. Failures are shared too, so a
wrong password is tried once, not once per credential, and an outage backs off together.

The backoff is short while the account's token is about to expire (or has, or there is none),
so a valid token is back within seconds of the Auth API's return; and a refresh request forces a
new token for an account at most once per FORCED_REFRESH_WINDOW_SECONDS, so credentials sharing
an account cannot turn annotation edits into Auth API calls.

A new token for an account is a wave of Secret writes, one per credential using it. When the
operator could not write them all by WAVE_MARGIN_SECONDS before the old token expires, at the
write rate it measures (controller/gates.py), the account's credentials refresh earlier
(`refresh_at`), and the operator says so once per token: a log line and the
simacan_refresh_advanced_total counter.

A wave that fits but needs longer than the jitter's spread is spread past the planned time too
(`spread_past`): woken all within the jitter's spread, thousands of rounds would wait at once for
the same slots, each keeping a few KiB. A credential's time, once planned for a token, stands
(`kept`): worked out again with a rate that has fallen since, the spread would put it later, and
the credential, woken at that time, would not be due but patch its status with a new
nextRefreshAt; after a restart every credential's time would move. A kept time earlier than
planned is not kept: it was a wave's start moved earlier while the rate dipped, and kept, each
dip would bring the account's next token forward.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from simacan_token_operator.auth.client import AuthAPI
from simacan_token_operator.model import reasons
from simacan_token_operator.model.errors import (
    AuthError,
    PermanentAuthError,
    RefreshDeferred,
    RefreshRejected,
    TransientAuthError,
)
from simacan_token_operator.model.schedule import (
    BACKOFF_BASE_SECONDS,
    FORCED_REFRESH_WINDOW_SECONDS,
    MIN_REFRESH_FRACTION,
    RETRY_AFTER_CAP_SECONDS,
    URGENT_RETRY_CAP_SECONDS,
    backoff_delay,
    jitter_fraction,
    jitter_spread,
    urgent_from,
)
from simacan_token_operator.model.spec import LoginSource
from simacan_token_operator.model.tokens import TokenSet

logger = logging.getLogger(__name__)

Usable = Callable[[TokenSet], bool]

MIN_FETCH_SPACING_SECONDS = 1.0
"""At most one request per login source this often while its tokens are short-lived: a token
that lives a second must not become a login every few milliseconds. Below the shortest
lifetime the tests use (3 s, refreshed after 2 s), so it never delays a normal refresh."""
SHORT_LIFETIME_SECONDS = 10.0
"""Tokens living less than this are short-lived (real Simacan tokens live an hour); only for them
does the spacing hold a request back, so a forced refresh or a new password right after a
refresh of a normal token is never delayed."""


WAVE_MARGIN_SECONDS = 5.0
"""Every Secret of an account gets the new token at least this long before the old one expires,
or a tenth of the token's life if that is shorter: a token of a few seconds (a test's) is not
refreshed at a tenth of its life just to keep five of them in hand."""
WAVE_SAFETY = 1.5
"""The measured write rate is an estimate, and falls when the CPUs are busy: a wave is planned
to need this many times the time that rate gives."""


CALLS_PER_ROUND = 2
"""A credential's round in a wave: its Secret write, then its status patch."""
MAX_WAVE_STRETCH = 0.5
"""A wave is spread past the planned time by at most this share of the margin left before
expiry: 10 of the 20 minutes on a one-hour token, where kubelet needs at most 90 s to update a
mounted Secret."""
ADVANCE_WORTH_SAYING_SECONDS = 1.0
WAVE_STEADY_SECONDS = 1.0
"""A wave's start follows the measured write rate only when it moves by more than this: the rate
wavers from pass to pass, and each new moment would be another nextRefreshAt in a credential's
status, so another status patch."""


def wave_seconds(writes: int, rate: float) -> float:
    """How long a wave of `writes` credentials takes at `rate` Secret writes a second, each with
    its status patch; rounded up to a power of two, so that a rate that only wavers moves no
    credential's nextRefreshAt (and so adds no status patch)."""
    return 2.0 ** math.ceil(math.log2(writes * CALLS_PER_ROUND / rate))


def wave_start(token: TokenSet, writes: int, rate: float) -> float:
    """The latest moment a wave of `writes` Secret writes at `rate` a second may start so that
    the last lands WAVE_MARGIN_SECONDS before `token` expires; never before MIN_REFRESH_FRACTION
    of its life (a token that cannot be spread over in time is refreshed as early as that)."""
    needed = writes / rate * WAVE_SAFETY
    lifetime = max(token.lifetime, 0.0)
    margin = min(WAVE_MARGIN_SECONDS, lifetime * MIN_REFRESH_FRACTION)
    return max(token.expires_at - margin - needed, token.obtained_at + lifetime * MIN_REFRESH_FRACTION)


def spread_past(token: TokenSet, planned: float, position: float, writes: int, rate: float) -> float:
    """`planned`, moved later by what the wave of `writes` credentials needs at `rate` beyond the
    jitter's spread, `position` of the way back; by at most MAX_WAVE_STRETCH of the margin left."""
    later = wave_seconds(writes, rate) - jitter_spread(token.lifetime)
    later = min(later, (token.expires_at - planned) * MAX_WAVE_STRETCH)
    return planned + max(later, 0.0) * (1.0 - position)


class TokenLifetimeTooShort(TransientAuthError):
    """The spacing held back a request; the credential keeps its token until it is allowed."""

    reason = reasons.TOKEN_LIFETIME_TOO_SHORT


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    token: TokenSet | None = None
    failure: AuthError | None = None
    failures: int = 0
    retry_at: float = 0.0
    """When the remembered failure may be retried while the token has life left."""
    urgent_retry_at: float = 0.0
    """When it may be retried while the token is in its last tenth, expired, or missing."""
    not_before: float = 0.0
    """The earliest retry at all: the failure's Retry-After, and never sooner than the shortest
    backoff (BACKOFF_BASE_SECONDS / 2), even when the token enters its last tenth right after."""
    failed_at: float = float("-inf")
    fetched_at: float = float("-inf")
    forced_at: float = float("-inf")
    """When the last fetch forced by a refresh request started: the next waits a window."""
    advanced_for: float | None = None
    """The expiry of the newest token whose wave was moved earlier (said once per token)."""
    wave: tuple[float, float] | None = None
    """The newest token's expiry and the start of its wave as last computed."""
    users: set[str] = field(default_factory=set)


class TokenPool:
    def __init__(
        self,
        api: AuthAPI,
        clock: Callable[[], float] = time.time,
        write_rate: Callable[[], float | None] | None = None,
        on_advanced: Callable[[], None] | None = None,
    ) -> None:
        """`write_rate`: the Secret writes a second the operator sustains now (None: not known
        yet); `on_advanced` is called each time an account's wave is moved earlier."""
        self._api = api
        self._clock = clock
        self._write_rate = write_rate
        self._on_advanced = on_advanced
        self._entries: dict[str, _Entry] = {}

    def attach(self, source: LoginSource, user: str) -> None:
        """Record that `user` (a credential's key) logs in as `source`; drops its previous source."""
        for key, entry in list(self._entries.items()):
            if user in entry.users and key != source.key:
                self._release(key, entry, user)
        self._entries.setdefault(source.key, _Entry()).users.add(user)

    def detach(self, user: str) -> None:
        for key, entry in list(self._entries.items()):
            if user in entry.users:
                self._release(key, entry, user)

    def _release(self, key: str, entry: _Entry, user: str) -> None:
        entry.users.discard(user)
        if not entry.users and not entry.lock.locked():
            del self._entries[key]

    def forgive(self, source: LoginSource) -> None:
        """Something the user controls changed: a remembered rejection or backoff no longer holds."""
        entry = self._entries.get(source.key)
        if entry is not None:
            entry.failure, entry.failures, entry.retry_at = None, 0, 0.0

    async def obtain(
        self, source: LoginSource, usable: Usable, *, held: TokenSet | None = None, forced: bool = False
    ) -> TokenSet:
        """A token that satisfies `usable`: the shared one if it does, else a refresh or login.

        Raises the remembered failure, without calling the Auth API, while its backoff lasts;
        `held` is the caller's own unexpired token, if any: when neither it nor the pool's token
        has more than a tenth of its life left, the backoff is short (`retry_at`). `forced`: a
        refresh request asks; raises RefreshDeferred within the account's forced-refresh window.
        """
        entry = self._entries.setdefault(source.key, _Entry())
        async with entry.lock:
            if entry.token is not None and usable(entry.token):
                return entry.token
            if entry.failure is not None and self._clock() < self._retry_at(entry, held):
                raise entry.failure.with_traceback(None)  # don't pile up every caller's frames
            if forced:
                self._check_window(entry)
            self._check_spacing(entry)
            entry.fetched_at = self._clock()
            if forced:
                entry.forced_at = entry.fetched_at
            try:
                token = await self._fetch(source, entry.token)
            except TransientAuthError as error:
                self._remember(source, entry, error)
                raise
            except PermanentAuthError as error:
                entry.failures += 1
                entry.failure, entry.retry_at = error, float("inf")
                raise
            entry.token, entry.failure, entry.failures, entry.retry_at = token, None, 0, 0.0
            return token

    def _remember(self, source: LoginSource, entry: _Entry, error: TransientAuthError) -> None:
        """When a transient failure may be retried: with the usual backoff, and with the short one
        that applies while the account's token is about to expire."""
        entry.failures += 1
        jitter, now = jitter_fraction(f"{source.key}:{entry.failures}"), self._clock()
        delay = backoff_delay(entry.failures, jitter, error.retry_after)
        urgent = backoff_delay(entry.failures, jitter, error.retry_after, cap=URGENT_RETRY_CAP_SECONDS)
        floor = min(error.retry_after, RETRY_AFTER_CAP_SECONDS) if error.retry_after else 0.0
        entry.failure, entry.failed_at = error, now
        entry.retry_at, entry.urgent_retry_at = now + delay, now + urgent
        entry.not_before = now + max(floor, BACKOFF_BASE_SECONDS / 2)

    def _retry_at(self, entry: _Entry, held: TokenSet | None) -> float:
        """When the remembered failure may be retried by a caller holding `held`.

        While the best token at hand (the caller's or the pool's) is in its last tenth, expired or
        missing, retries are at most URGENT_RETRY_CAP_SECONDS apart; if it enters its last tenth
        during a longer backoff, the retry comes at that moment. A Retry-After holds either back.
        """
        if isinstance(entry.failure, PermanentAuthError):
            return entry.retry_at
        tokens = [token for token in (held, entry.token) if token is not None]
        best = max(tokens, key=lambda token: token.expires_at, default=None)
        urgent = float("-inf") if best is None else urgent_from(best.obtained_at, best.expires_at)
        if urgent <= entry.failed_at:  # already urgent when it failed
            return min(entry.retry_at, entry.urgent_retry_at)
        return min(entry.retry_at, max(urgent, entry.not_before))

    def _check_window(self, entry: _Entry) -> None:
        wait = entry.forced_at + FORCED_REFRESH_WINDOW_SECONDS - self._clock()
        if wait > 0:
            raise RefreshDeferred(
                f"a refresh request forced a new token for this account less than "
                f"{FORCED_REFRESH_WINDOW_SECONDS:.0f}s ago",
                retry_after=wait,
            )

    def forced_refresh_at(self, source: LoginSource, requested_at: float) -> float:
        """The earliest moment a refresh request made at `requested_at` may force a new token:
        -inf if no window is open, or if a request to the Auth API started since it was made (its
        token satisfies it, or its failure is remembered): a caller then waits for that one."""
        entry = self._entries.get(source.key)
        if entry is None or entry.fetched_at >= requested_at:
            return float("-inf")
        return entry.forced_at + FORCED_REFRESH_WINDOW_SECONDS

    def refresh_at(
        self,
        source: LoginSource,
        token: TokenSet,
        planned: float,
        position: float | None = None,
        kept: float | None = None,
    ) -> float:
        """When a credential of `source` should replace `token`, which it planned for `planned`:
        no later than the moment the account's wave must start to land in time (wave_start); a
        wave that fits is spread by `spread_past` (module docstring). The first time a token's
        wave moves earlier, it is logged and counted. `position`: the credential's jitter (None:
        a refreshBefore the user set, kept as it is); `kept`: the time it planned for `token`
        before, which stands unless the wave must start earlier (or it was such an earlier start)."""
        entry = self._entries.get(source.key)
        rate = self._write_rate() if self._write_rate is not None else None
        if entry is None or rate is None or rate <= 0:
            return planned
        start = wave_start(token, len(entry.users), rate)
        held = entry.wave
        if held is not None and held[0] == token.expires_at and abs(start - held[1]) <= WAVE_STEADY_SECONDS:
            start = held[1]
        elif held is None or token.expires_at >= held[0]:
            entry.wave = (token.expires_at, start)
        if start >= planned:
            if kept is not None and kept >= planned:  # (bounded like a spread: a forged status)
                return min(kept, start, planned + (token.expires_at - planned) * MAX_WAVE_STRETCH)
            if position is None:
                return planned
            return min(spread_past(token, planned, position, len(entry.users), rate), start)
        said = entry.advanced_for
        # Passes weigh the token a Secret holds and the account's newer one in turn: only a newer
        # token's wave is news, and a move of less than a second is not worth a line.
        if (said is None or token.expires_at > said) and planned - start >= ADVANCE_WORTH_SAYING_SECONDS:
            entry.advanced_for = token.expires_at
            logger.warning(
                "account %s: %d credentials at about %.0f Secret writes/s would not all get a new "
                "token %.0fs before this one expires; starting the shared refresh at %s, %.0fs "
                "earlier than planned",
                source.account,
                len(entry.users),
                rate,
                WAVE_MARGIN_SECONDS,
                time.strftime("%H:%M:%S", time.gmtime(start)),
                planned - start,
            )
            if self._on_advanced is not None:
                self._on_advanced()
        return start

    def _check_spacing(self, entry: _Entry) -> None:
        wait = entry.fetched_at + MIN_FETCH_SPACING_SECONDS - self._clock()
        if wait > 0 and entry.token is not None and entry.token.lifetime < SHORT_LIFETIME_SECONDS:
            raise TokenLifetimeTooShort(
                f"the Auth API's tokens live only {max(entry.token.lifetime, 0):.1f}s; the operator asks "
                f"for a new one at most every {MIN_FETCH_SPACING_SECONDS:.0f}s per account",
                retry_after=wait,
            )

    def current(self, source: LoginSource) -> TokenSet | None:
        """The token last obtained for `source`: what every Secret of that login should hold.

        Only tokens the pool itself obtained are here; a token adopted from a Secret never is,
        so what a tenant writes into its Secret cannot reach another namespace."""
        entry = self._entries.get(source.key)
        return entry.token if entry is not None else None

    def retry_at(self, source: LoginSource, held: TokenSet | None = None) -> float | None:
        """When the remembered failure may be retried by a caller holding `held`; None: no failure."""
        entry = self._entries.get(source.key)
        if entry is None or entry.failure is None:
            return None
        return self._retry_at(entry, held)

    async def _fetch(self, source: LoginSource, current: TokenSet | None) -> TokenSet:
        if current is not None and current.refresh_token and current.refreshable_at(self._clock()):
            try:
                return await self._api.refresh(source.auth_url, current.refresh_token)
            except RefreshRejected:
                pass
        return await self._api.login(source.auth_url, source.username, source.password)
