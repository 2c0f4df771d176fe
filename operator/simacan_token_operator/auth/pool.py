"""One token per login source, shared by every SimacanCredential that uses it.

N credentials with the same Auth URL, username and password cost one Auth API call per
token lifetime: the first credential due for a refresh fetches a new pair (single flight,
under a per-source lock) and the others find it fresh. Failures are shared too, so a
wrong password is tried once, not once per credential, and an outage backs off together.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from simacan_token_operator.auth.client import AuthAPI
from simacan_token_operator.model import reasons
from simacan_token_operator.model.errors import (
    AuthError,
    PermanentAuthError,
    RefreshRejected,
    TransientAuthError,
)
from simacan_token_operator.model.schedule import backoff_delay, jitter_fraction
from simacan_token_operator.model.spec import LoginSource
from simacan_token_operator.model.tokens import TokenSet

Usable = Callable[[TokenSet], bool]

MIN_FETCH_SPACING_SECONDS = 1.0
"""At most one request per login source this often while its tokens are short-lived: a token
that lives a second must not become a login every few milliseconds. Below the shortest
lifetime the tests use (3 s, refreshed after 2 s), so it never delays a normal refresh."""
SHORT_LIFETIME_SECONDS = 10.0
"""Tokens living less than this are short-lived (real Simacan tokens live an hour); only for them
does the spacing hold a request back, so a forced refresh or a new password right after a
refresh of a normal token is never delayed."""


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
    fetched_at: float = float("-inf")
    users: set[str] = field(default_factory=set)


class TokenPool:
    def __init__(self, api: AuthAPI, clock: Callable[[], float] = time.time) -> None:
        self._api = api
        self._clock = clock
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

    async def obtain(self, source: LoginSource, usable: Usable) -> TokenSet:
        """A token that satisfies `usable`: the shared one if it does, else a refresh or login.

        Raises the remembered failure, without calling the Auth API, while its backoff lasts.
        """
        entry = self._entries.setdefault(source.key, _Entry())
        async with entry.lock:
            if entry.token is not None and usable(entry.token):
                return entry.token
            if entry.failure is not None and self._clock() < entry.retry_at:
                raise entry.failure.with_traceback(None)  # don't pile up every caller's frames
            self._check_spacing(entry)
            entry.fetched_at = self._clock()
            try:
                token = await self._fetch(source, entry.token)
            except TransientAuthError as error:
                entry.failures += 1
                delay = backoff_delay(
                    entry.failures, jitter_fraction(f"{source.key}:{entry.failures}"), error.retry_after
                )
                entry.failure, entry.retry_at = error, self._clock() + delay
                raise
            except PermanentAuthError as error:
                entry.failures += 1
                entry.failure, entry.retry_at = error, float("inf")
                raise
            entry.token, entry.failure, entry.failures, entry.retry_at = token, None, 0, 0.0
            return token

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

    def retry_at(self, source: LoginSource) -> float | None:
        entry = self._entries.get(source.key)
        if entry is None or entry.failure is None:
            return None
        return entry.retry_at

    async def _fetch(self, source: LoginSource, current: TokenSet | None) -> TokenSet:
        if current is not None and current.refresh_token and current.refreshable_at(self._clock()):
            try:
                return await self._api.refresh(source.auth_url, current.refresh_token)
            except RefreshRejected:
                pass
        return await self._api.login(source.auth_url, source.username, source.password)
