"""Sharing the Kubernetes calls fairly: a slot per pass, at most a few per namespace, and sleeps.

The official client is synchronous: every call holds a thread. The gates bound how many passes
(and the Secrets they hold) are in flight at once, and how many of them one namespace may hold,
so that one tenant with many credentials queues behind itself and not in front of its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

KUBE_CONCURRENCY = 16
NAMESPACE_CONCURRENCY = 4
"""Of the KUBE_CONCURRENCY slots, at most this many serve one namespace at a time."""


async def sleep_until(wake: asyncio.Event, wake_at: float | None, clock: Callable[[], float]) -> None:
    """Until `wake` is set or `wake_at` (by `clock`) comes; None waits for `wake` alone.

    A timer handle rather than asyncio.wait_for: no extra Task per sleep, per credential."""
    timer = None
    if wake_at is not None:
        timer = asyncio.get_running_loop().call_later(max(wake_at - clock(), 0.0), wake.set)
    try:
        await wake.wait()
    finally:
        if timer is not None:
            timer.cancel()


class NamespaceGates:
    """A semaphore per namespace with work in flight, so that one namespace's credentials hold at
    most NAMESPACE_CONCURRENCY of the shared Kubernetes slots: a tenant with many credentials (or
    many restart targets) queues behind itself, not in front of its neighbours."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._gates: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def held(self, namespace: str) -> AsyncIterator[asyncio.Semaphore]:
        """The namespace's semaphore, kept while anyone uses it and dropped after the last."""
        gate, users = self._gates.get(namespace) or (asyncio.Semaphore(self._limit), 0)
        self._gates[namespace] = (gate, users + 1)
        try:
            yield gate
        finally:
            gate, users = self._gates[namespace]
            if users == 1:
                del self._gates[namespace]
            else:
                self._gates[namespace] = (gate, users - 1)

    def __len__(self) -> int:
        return len(self._gates)


class Slot:
    """One slot of each of some semaphores (taken in order), that can be given up for a while and
    taken back, and that are released on exit only if held (a cancelled take-back leaves nothing
    to release)."""

    def __init__(self, *gates: asyncio.Semaphore) -> None:
        self._gates = gates
        self._held = 0

    async def _take(self) -> None:
        for gate in self._gates:
            await gate.acquire()
            self._held += 1

    def _give(self) -> None:
        for gate in reversed(self._gates[: self._held]):
            gate.release()
        self._held = 0

    async def __aenter__(self) -> Slot:
        try:
            await self._take()
        except BaseException:
            self._give()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        self._give()

    async def given_up_while(self, awaitable: Awaitable[T]) -> T:
        self._give()
        try:
            return await awaitable
        finally:
            try:
                await self._take()
            except BaseException:
                self._give()
                raise
