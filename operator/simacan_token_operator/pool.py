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

from .authapi import AuthAPI
from .errors import AuthError, PermanentAuthError, RefreshRejected, TransientAuthError
from .schedule import backoff_delay, jitter_fraction
from .spec import LoginSource
from .tokens import TokenSet

Usable = Callable[[TokenSet], bool]


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    token: TokenSet | None = None
    failure: AuthError | None = None
    failures: int = 0
    retry_at: float = 0.0
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

    def cached(self, source: LoginSource) -> TokenSet | None:
        entry = self._entries.get(source.key)
        return entry.token if entry else None

    def forgive(self, source: LoginSource) -> None:
        """Something the user controls changed: a remembered rejection or backoff no longer holds."""
        entry = self._entries.get(source.key)
        if entry is not None:
            entry.failure, entry.failures, entry.retry_at = None, 0, 0.0

    def seed(self, source: LoginSource, token: TokenSet) -> None:
        """Share a token read back from a Secret after a restart, so siblings need no login either."""
        entry = self._entries.setdefault(source.key, _Entry())
        # Never displace a token we obtained ourselves: only it carries the refresh token.
        if entry.token is None or (
            entry.token.refresh_token is None and entry.token.expires_at < token.expires_at
        ):
            entry.token = token

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
