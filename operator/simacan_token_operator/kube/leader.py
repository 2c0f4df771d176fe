"""Leader election on a coordination.k8s.io Lease, so two replicas give one active operator.

The standby only competes for the Lease; it starts kopf once it holds it. Like client-go,
expiry is judged by when this process last saw the Lease change (a monotonic clock), not by
the holder's timestamps, so clock skew between nodes cannot cause two leaders.

A leader that cannot renew within `renew_deadline` stops writing at once, strictly before
a standby may take over (`duration`): a timer ends leadership at the deadline even while a
renewal hangs on a dead connection, every renewal request times out before the deadline,
and the elector is the fence every write asks first (kube.Fence), granting a write no more
time than remains before a standby could take over.

The Lease's requests run on the elector's own threads and client transport, never on the
event loop's session that every other Kubernetes call shares (transport.py) nor in the default
executor, and take nothing from the request budget (budget.py): a wave of Secret writes, a
busy executor or a budget with a long queue cannot delay a renewal. They are a handful every
`retry_period`, so they need no limit of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from simacan_token_operator.kube.deadlines import CONNECT_TIMEOUT, READ_TIMEOUT
from simacan_token_operator.kube.lease import LeaseClient, Timeout

logger = logging.getLogger(__name__)
T = TypeVar("T")

LEASE_THREADS = 2
"""One for the attempt in progress, one for an attempt or release starting while an abandoned
one (timed out on a dead connection) is still ending: its requests end by the deadline."""

WRITE_MARGIN = 1.0
"""A write must end this long before a standby may take over (allows for clock rate and latency)."""


@dataclass(frozen=True)
class LeaseTimings:
    duration: float = 15.0
    """How long a standby waits after the last renewal it saw before taking over."""
    renew_deadline: float = 10.0
    """A leader that could not renew for this long stops working, before anyone may take over."""
    retry_period: float = 2.0
    write_margin: float = WRITE_MARGIN
    """A write must end this long before a standby may take over; shorter only in tests."""


class LastChangeSeen:
    """When this process first saw the Lease as it is now, by its own monotonic clock.

    Another holder's Lease expires a lease duration after it last changed as seen here, never
    by the holder's timestamps (as in client-go): clock skew between nodes cannot make two leaders."""

    def __init__(self, identity: str, default_duration: float) -> None:
        self.identity = identity
        self.default_duration = default_duration
        self._record: tuple[Any, ...] | None = None
        self._since = 0.0

    def free_for_us(self, spec: Mapping[str, Any], now: float) -> bool:
        """Ours, unheld, or unchanged for a whole lease duration up to `now` (monotonic)."""
        holder = spec.get("holderIdentity")
        record = (
            holder,
            spec.get("renewTime"),
            spec.get("leaseDurationSeconds"),
            spec.get("leaseTransitions"),
        )
        if record != self._record:
            self._record, self._since = record, now
        duration = spec.get("leaseDurationSeconds") or self.default_duration
        return not (holder and holder != self.identity and now < self._since + duration)


class LeaderElector:
    def __init__(
        self,
        api_client: Any,
        namespace: str,
        name: str,
        identity: str,
        timings: LeaseTimings = LeaseTimings(),
        on_leading: Callable[[bool], None] | None = None,
    ) -> None:
        self._lease = LeaseClient(api_client, namespace, name, identity, timings.duration)
        self._threads = ThreadPoolExecutor(max_workers=LEASE_THREADS, thread_name_prefix="lease")
        self.namespace, self.name, self.identity = namespace, name, identity
        self.timings = timings
        self._on_leading = on_leading
        self._seen = LastChangeSeen(identity, timings.duration)
        self._last_renewed = 0.0
        self._leading = False
        self._lost: asyncio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._writes: set[asyncio.Future[Any]] = set()
        self._stopping = False
        self._holding: asyncio.Event | None = None
        self.lost = False
        """True once leadership ended at the renew deadline (not by release())."""
        self.connected = asyncio.Event()
        """Set after the first successful API round trip: the standby is healthy and ready."""

    @property
    def leading(self) -> bool:
        """True from winning the Lease until the renew deadline passes without a renewal."""
        return self._leading and time.monotonic() < self._last_renewed + self.timings.renew_deadline

    def write_budget(self) -> float | None:
        """kube.Fence: None unless leading; else the seconds left before a standby may take over."""
        if not self.leading:
            return None
        return self._last_renewed + self.timings.duration - self.timings.write_margin - time.monotonic()

    def track(self, write: asyncio.Future[Any]) -> None:
        """kube.Fence: remember a write in flight until it ends, so release() can wait for it."""
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    async def acquire(self) -> None:
        """Return once this process holds the Lease."""
        logger.info("waiting to become leader on Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while True:
            if await self._try_acquire_or_renew(self.timings.retry_period + READ_TIMEOUT):
                break
            await asyncio.sleep(self.timings.retry_period)
        self._set_leading(True)
        logger.info("became leader on Lease %s/%s", self.namespace, self.name)

    async def hold(self) -> None:
        """Keep renewing; return at the renew deadline if no renewal made it in time.

        A timer ends leadership at the deadline even while a renewal hangs; each attempt is cut
        off at the deadline too. No sub-tasks: kopf cancels tasks created after it started when
        it stops, and this one must outlive kopf to release the Lease."""
        loop = asyncio.get_running_loop()
        self._lost = asyncio.Event()
        self._holding = asyncio.Event()
        self._timer = loop.call_at(self._deadline(), self._deadline_passed)
        try:
            while not self._lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.timings.retry_period):
                        await self._lost.wait()
                remaining = self._deadline() - time.monotonic()
                if not self._lost.is_set() and remaining > 0:
                    await self._try_acquire_or_renew(remaining)
        finally:
            self._timer.cancel()
            self._set_leading(False)
            self._holding.set()
        if self._stopping:
            return  # released on purpose
        self.lost = True
        logger.error(
            "could not renew the Lease %s/%s within its renew deadline (%.0fs): stopped writing; stopping",
            self.namespace,
            self.name,
            self.timings.renew_deadline,
        )

    def _deadline(self) -> float:
        # time.monotonic() is the event loop's clock (asyncio's BaseEventLoop.time)
        return self._last_renewed + self.timings.renew_deadline

    def _deadline_passed(self) -> None:
        self._set_leading(False)  # the fence is closed by the clock already; this tells the metric
        if self._lost is not None:
            self._lost.set()

    async def release(self) -> None:
        """Hand over at once on a clean shutdown instead of making the standby wait out the Lease.

        Writes are refused from here on; writes still in flight (their callers may have been
        cancelled, their threads not) end first, within their budget, so the next leader's
        writes cannot cross them."""
        self._stopping = True
        self._set_leading(False)
        if self._lost is not None and self._holding is not None:
            self._lost.set()  # hold() stops renewing; an attempt in flight ends first
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(READ_TIMEOUT):
                    await self._holding.wait()
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=READ_TIMEOUT)
        timeout = (CONNECT_TIMEOUT, READ_TIMEOUT / 3)
        try:
            lease = await self._in_thread(self._lease.get, timeout)
            if not self._lease.held_by_us(lease):
                return
            await self._in_thread(self._lease.hand_back, lease, timeout)
            logger.info("released the Lease %s/%s", self.namespace, self.name)
        except (ApiException, OSError, ValueError, HTTPError) as error:
            logger.warning("could not release the Lease: %s", type(error).__name__)

    async def _try_acquire_or_renew(self, within: float) -> bool:
        """One attempt, given up after `within` seconds (each request gets at most half of it)."""
        per_request = max(min(READ_TIMEOUT, within / 2), 0.1)
        timeout = (min(CONNECT_TIMEOUT, per_request), per_request)
        try:
            async with asyncio.timeout(within):  # a scope, not a task (see hold)
                won_at = await self._in_thread(self._attempt, timeout)
        except TimeoutError:
            logger.warning("Lease %s/%s: no answer within %.1fs", self.namespace, self.name, within)
            return False
        except ApiException as error:
            if error.status == 409:  # someone else wrote the Lease first
                return False
            logger.warning("Lease %s/%s: HTTP %s %s", self.namespace, self.name, error.status, error.reason)
            return False
        except (OSError, ValueError, HTTPError) as error:
            logger.warning("Lease %s/%s: %s", self.namespace, self.name, type(error).__name__)
            return False
        self.connected.set()
        if won_at is None:
            return False
        self._won(won_at)
        return True

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` on the elector's own threads (see the module's docstring)."""
        call = functools.partial(function, *args)
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    def _attempt(self, timeout: Timeout) -> float | None:
        """In a thread: one read and, if the Lease is ours to take or keep, one write.

        Returns when the winning attempt started (the renewal counts from then), else None."""
        now = time.monotonic()  # before the request: the renewal counts from when it was sent
        try:
            lease = self._lease.get(timeout)
        except ApiException as error:
            if error.status != 404:
                raise
            if self._stopping:
                return None
            self._lease.create(timeout)
            return now
        if not self._seen.free_for_us(lease.get("spec") or {}, now):
            return None
        if self._stopping:  # released meanwhile: never take the Lease back
            return None
        self._lease.take(lease, timeout)
        return now

    def _won(self, started: float) -> None:
        self._last_renewed = max(self._last_renewed, started)
        if self._timer is not None and self._lost is not None and not self._lost.is_set():
            self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(self._deadline(), self._deadline_passed)

    def _set_leading(self, leading: bool) -> None:
        if leading != self._leading:
            self._leading = leading
            if self._on_leading is not None:
                self._on_leading(leading)
