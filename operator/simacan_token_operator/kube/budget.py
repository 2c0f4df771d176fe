"""The operator's request budget: a client-side QPS and burst limit on its Kubernetes API calls.

API Priority and Fairness protects the API server from us, but only once our requests have
reached it; a bug that calls in a loop would still flood it (and the audit log). The budget is
a seatbelt against that, sized so that it never slows the work the operator is meant to do.

Defaults (flags --kube-api-qps and --kube-api-burst): client-go's QPS 5 / burst 10 and
controller-runtime's old 20 / 30 were sized for controllers that read from caches, and
controller-runtime now turns the client-side limit off altogether and relies on APF. This
operator's floor is two requests per refresh (a Secret write and a status patch). With 2,000
credentials and 60 s tokens, refreshed 1.75 times per lifetime, that is about 120 requests a
second in steady state, and 10,000 credentials with 300 s tokens need the same; a first sync or a
password change asks for a write and a status patch or two per credential at once and must
finish within seconds. So the defaults are QPS 500, with room to spare for those loads, and a
burst of 5,000, so that a first sync of 2,000 credentials (about 6,000 requests) goes at the API
server's speed: with QPS 200 and a burst of 1,000 it took 38.6 s instead of 25.8 s
(`python -m benchmarks.footprint --credentials 2000`, 2026-12-06). A runaway loop is held to
500 requests a second; APF shares the rest fairly. QPS 0 turns the limit off.

The bucket is a GCRA (the virtual-scheduling form of a token bucket): each request is given
its own send time, so waiters queue in order and none busy-waits. Waiting is an asyncio sleep:
it blocks neither the event loop nor a thread. A 429 from APF holds every caller back until its
Retry-After has passed (`hold_off`), after which requests resume at the steady rate, not in a
burst. Lease renewals do not take from this budget (leader.py): they must never queue.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

DEFAULT_QPS = 500.0
DEFAULT_BURST = 5000


class RequestBudget:
    """At most `burst` requests at once, then `qps` a second. Safe to use from any thread."""

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("a request budget needs qps > 0 and burst >= 1")
        self.qps, self.burst = qps, burst
        self._interval = 1.0 / qps
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._lock = threading.Lock()
        self._next_free = clock()
        """The theoretical arrival time: a request may be sent at `_next_free - _tolerance`."""

    def reserve(self) -> float:
        """Take the next send time; returns how many seconds from now to wait for it (0 if none)."""
        with self._lock:
            now = self._clock()
            send_at = max(now, self._next_free - self._tolerance)
            self._next_free = max(self._next_free, send_at) + self._interval
            return send_at - now

    def try_take(self) -> bool:
        """Take a send time only if it is now: for what is dropped rather than delayed."""
        with self._lock:
            now = self._clock()
            if self._next_free - self._tolerance > now:
                return False
            self._next_free = max(self._next_free, now) + self._interval
            return True

    def full(self) -> bool:
        """Whether the whole burst is free again: such a budget is as good as a new one."""
        return self._next_free <= self._clock()

    def give_back(self) -> None:
        """A caller that reserved and then gave up (cancelled) returns its place, roughly as
        golang.org/x/time/rate does: later reservations keep theirs."""
        with self._lock:
            self._next_free = max(self._next_free - self._interval, self._clock())

    def hold_off(self, seconds: float) -> None:
        """Send nothing for `seconds` (a Retry-After), then resume at the steady rate."""
        with self._lock:
            self._next_free = max(self._next_free, self._clock() + seconds + self._tolerance)

    async def wait(self) -> None:
        """Until this caller may send one request; cancelled, it gives its place back."""
        delay = self.reserve()
        if delay <= 0:
            return
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.give_back()
            raise
