"""Sharing the Kubernetes calls fairly: a slot per pass, at most a few per namespace, and sleeps.

The gates bound how many passes (and the Secrets they hold) and calls are in flight at once, and
how many of them one namespace may hold, so that one tenant with many credentials queues behind
itself and not in front of its neighbours.
Waiters are served by priority, then in arrival order: when everything is due at once (a first
sync, a password change) the passes that write token Secrets go before the status patches and
Events that report them, so every workload has its token before the reports catch up, and good
news waits behind every status (reporting.Reporter.report), so the statuses catch up first.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

KUBE_CONCURRENCY = 16
NAMESPACE_CONCURRENCY = 12
"""Of the KUBE_CONCURRENCY slots, at most this many serve one namespace at a time: a namespace
whose calls hang leaves the rest to its neighbours. Most of the slots, so that one namespace
with thousands of credentials syncs at the API server's speed: 2,000 in one namespace had every
token Secret 11.5 s after the operator's exec with 4 slots and 10.1 s with 12 (load average
4.5-4.8 from other work; `python -m benchmarks.api_traffic --large --first-sync`, 2026-12-06)."""

PASS = 0
"""A pass: the reads it needs and the token Secret write it leads to. Served first."""
REPORT = 1
"""A status patch or an Event: served when no pass waits for the same slots."""
NEWS = 2
"""A Normal Event held back in a wave: served when no pass or report waits for the same slots."""

PASS_TIME_WEIGHT = 0.05
"""How much each pass moves the average time a pass holds its slots (an exponential average:
the last few hundred passes count)."""


QUIET = contextvars.Context()
"""The context a sleeping worker's timer runs in: none of its own, so no copy per timer."""


class Wake:
    """A worker's "look again" flag, and what to call when it is set while the worker sleeps.

    Between rounds a credential is this flag, at most one timer and one callback. It used to
    be an asyncio task asleep on an asyncio.Event: the task, its coroutine frames, a future, a
    context and a weak reference in asyncio's task set kept about 1.5 KiB per credential,
    15 MiB at 10,000."""

    __slots__ = ("_flag", "_on_set", "_timer")

    def __init__(self) -> None:
        self._flag = False
        self._on_set: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True
        on_set = self._on_set
        if on_set is not None:
            self.cancel()
            on_set()

    def clear(self) -> None:
        self._flag = False

    def sleep(self, wake_at: float | None, clock: Callable[[], float], on_set: Callable[[], None]) -> None:
        """Call `on_set` once: when the flag is set (at once if it is) or when `wake_at` comes
        (by `clock`; None: only when set)."""
        self.cancel()
        if self._flag:
            on_set()
            return
        self._on_set = on_set
        if wake_at is not None:
            delay = max(wake_at - clock(), 0.0)
            self._timer = asyncio.get_running_loop().call_later(delay, self.set, context=QUIET)

    def cancel(self) -> None:
        """Forget the callback and the timer (the flag stays as it is)."""
        self._on_set = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class PriorityGate:
    """A semaphore whose waiters are served by priority (lower first), then in arrival order.

    asyncio.Semaphore serves in arrival order only: a status patch queued before a thousand
    passes would go first, and a status patch queued behind them would wait for all of them."""

    def __init__(self, value: int) -> None:
        self.free = value
        """Slots not held (nor granted to a waiter that has not resumed yet)."""
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    def waiting(self) -> int:
        return sum(1 for *_, future in self._waiters if not future.done())

    def queued(self) -> bool:
        """Whether a caller would wait now (cheap: a wave has thousands of waiters to count)."""
        return self.free <= 0 and bool(self._waiters)

    async def acquire(self, priority: int) -> None:
        if self.free > 0:  # no one waits while a slot is free: release() hands it on at once
            self.free -= 1
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._arrivals), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # granted, then cancelled: hand it on
                self.release()
            raise

    def release(self) -> None:
        self.free += 1
        while self.free > 0 and self._waiters:
            *_, future = heapq.heappop(self._waiters)
            if not future.done():  # a cancelled waiter's entry is dropped here
                self.free -= 1
                future.set_result(None)


class NamespaceGates:
    """A semaphore per namespace with work in flight, so that one namespace's credentials hold at
    most NAMESPACE_CONCURRENCY of the shared Kubernetes slots: a tenant with many credentials (or
    many restart targets) queues behind itself, not in front of its neighbours."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._gates: dict[str, tuple[PriorityGate, int]] = {}

    def enter(self, namespace: str) -> PriorityGate:
        """The namespace's gate, for one more user; `leave` when done with it."""
        gate, users = self._gates.get(namespace) or (PriorityGate(self._limit), 0)
        self._gates[namespace] = (gate, users + 1)
        return gate

    def leave(self, namespace: str) -> None:
        """One user fewer; the gate is dropped after the last."""
        gate, users = self._gates[namespace]
        if users == 1:
            del self._gates[namespace]
        else:
            self._gates[namespace] = (gate, users - 1)

    def queued(self, namespace: str) -> bool:
        entry = self._gates.get(namespace)
        return entry is not None and entry[0].queued()

    def __len__(self) -> int:
        return len(self._gates)


class Slot:
    """One slot of each of some gates (taken in order, at one priority), that can be given up for
    a while and taken back, and that are released on exit only if held (a cancelled take-back
    leaves nothing to release).

    A class, not an asynccontextmanager: in a wave thousands of rounds wait for a slot at once,
    and a generator-based one kept about 1 KiB more per waiting round."""

    __slots__ = ("_gates", "_held", "_on_held", "_priority", "_since", "_total")

    def __init__(
        self, priority: int, *gates: PriorityGate, on_held: Callable[[float], None] | None = None
    ) -> None:
        """`on_held` learns, on exit, how long every gate was held in all (in seconds; not
        while given up)."""
        self._priority, self._gates, self._on_held = priority, gates, on_held
        self._held = 0
        self._since = 0.0
        self._total = 0.0

    async def _take(self) -> None:
        for gate in self._gates:
            await gate.acquire(self._priority)
            self._held += 1
        self._since = time.monotonic()

    def _give(self) -> None:
        if self._held == len(self._gates):
            self._total += time.monotonic() - self._since
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
        if self._on_held is not None:
            self._on_held(self._total)

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


class NamespaceSlot(Slot):
    """A slot of a namespace's gate, then of the shared one; the namespace's gate is kept while
    anyone uses it (NamespaceGates)."""

    __slots__ = ("_namespace", "_namespaces")

    def __init__(
        self,
        namespaces: NamespaceGates,
        namespace: str,
        priority: int,
        shared: PriorityGate,
        on_held: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(priority, shared, on_held=on_held)
        self._namespaces, self._namespace = namespaces, namespace

    async def __aenter__(self) -> Slot:
        self._gates = (self._namespaces.enter(self._namespace), *self._gates)
        try:
            return await super().__aenter__()
        except BaseException:
            self._namespaces.leave(self._namespace)
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await super().__aexit__(*exc_info)
        finally:
            self._namespaces.leave(self._namespace)


class KubeGates:
    """The shared gate and the namespaces' gates: a call about a namespace takes a slot of that
    namespace's gate first, then one of the shared gate, so that one namespace never waits in
    the shared queue with more than its share."""

    def __init__(self, limit: int = KUBE_CONCURRENCY, per_namespace: int = NAMESPACE_CONCURRENCY) -> None:
        self.shared = PriorityGate(limit)
        self.namespaces = NamespaceGates(per_namespace)
        self._per_namespace = per_namespace
        self.pass_seconds: float | None = None
        """The average time a pass holds its slots; None before the first pass."""

    def write_rate(self) -> float | None:
        """Passes a second, and so token Secret writes, that one namespace's share of the slots
        sustains at the recent passes' pace (slots / time each is held, by Little's law); None
        before the first pass. One namespace's share: a wave may be all in one namespace."""
        if not self.pass_seconds:
            return None
        return self._per_namespace / self.pass_seconds

    def _pass_held(self, seconds: float) -> None:
        previous = self.pass_seconds
        self.pass_seconds = (
            seconds if previous is None else previous + PASS_TIME_WEIGHT * (seconds - previous)
        )

    def queued(self, namespace: str | None) -> bool:
        """Whether calls about `namespace` queue now: a wave is under way."""
        return self.shared.queued() or (namespace is not None and self.namespaces.queued(namespace))

    def slot(self, namespace: str | None, priority: int) -> Slot:
        """A slot for calls about `namespace` (None: about no one namespace, e.g. a cluster-wide
        credential's status), given up on exit: `async with gates.slot(...)`."""
        on_held = self._pass_held if priority == PASS else None
        if namespace is None:
            return Slot(priority, self.shared, on_held=on_held)
        return NamespaceSlot(self.namespaces, namespace, priority, self.shared, on_held)
