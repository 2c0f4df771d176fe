"""Lease renewals keep their cadence while every thread of the default executor is stuck (kopf runs
blocking work there), the operator's calls wait on a slow API server and the request budget has a
long queue: the Lease has threads of its own."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import pytest

from localenv.loopback import serving
from simacan_token_operator.kube.budget import RequestBudget
from simacan_token_operator.kube.client import Kube
from simacan_token_operator.kube.leader import LeaderElector, LeaseTimings
from tests.unit.kubeapi import api_client_for, emulated_api

TIMINGS = LeaseTimings(duration=3.0, renew_deadline=1.0, retry_period=0.15)
"""Short, so the test takes seconds; the renewals still need a thread every 0.15 s."""
SLOW = 0.5
"""Seconds the slow server takes to answer each request: 60 reads keep the pool busy for 7.5 s."""
POOL = 4
WINDOW = 2 * TIMINGS.renew_deadline
"""How long the renewals are watched: a renewal queued behind the reads for a renew deadline
would end leadership within it."""


class _Slow(http.server.BaseHTTPRequestHandler):
    over: ClassVar[threading.Event] = threading.Event()
    """Set when the test has seen enough: the reads still in flight are answered at once."""

    def do_GET(self) -> None:
        self.over.wait(SLOW)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def slow_api() -> Iterator[str]:
    _Slow.over.clear()
    with serving(_Slow) as url:
        yield url


def test_lease_renewals_keep_their_cadence_while_the_default_executor_is_saturated(slow_api: str) -> None:
    async def scenario(lease_api: str) -> tuple[float, float, int, bool]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=POOL))
        leader = LeaderElector(api_client_for(lease_api), "default", "busy-lease", "leader", TIMINGS)
        await leader.acquire()
        holding = asyncio.create_task(leader.hold())
        kube = Kube(api_client_for(slow_api), budget=RequestBudget(qps=20, burst=POOL))
        reads = [asyncio.create_task(kube.read_secret("team-a", f"s-{i}")) for i in range(60)]
        stuck = [asyncio.create_task(asyncio.to_thread(_Slow.over.wait, SLOW)) for _ in range(60)]
        await asyncio.sleep(0.1)  # the stuck calls take every thread, and more queue behind them

        async def probe() -> float:
            """How long a no-op waits for a thread, queued behind the reads: proves the pool is full."""
            queued_at = time.monotonic()
            await asyncio.to_thread(lambda: None)
            return time.monotonic() - queued_at

        probing = asyncio.create_task(probe())  # waits while the window below runs
        worst_age, renewals = 0.0, set[float]()
        fenced_ever = False
        window_end = time.monotonic() + WINDOW
        while time.monotonic() < window_end:
            renewals.add(leader._last_renewed)
            worst_age = max(worst_age, time.monotonic() - leader._last_renewed)
            fenced_ever = fenced_ever or leader.write_budget() is None or holding.done()
            await asyncio.sleep(0.02)
        probe_waited = await probing
        for read in reads:
            read.cancel()
        _Slow.over.set()  # the executor's threads end now, not up to SLOW later
        await asyncio.gather(*stuck)
        await kube.aclose()
        await leader.release()
        await asyncio.wait_for(holding, 5)
        return probe_waited, worst_age, len(renewals), fenced_ever

    with emulated_api() as lease_api:
        probe_waited, worst_age, renewals, fenced_ever = asyncio.run(scenario(lease_api))
    print(
        f"default executor: a no-op waited {probe_waited:.2f}s for a thread; lease: {renewals} renewals "
        f"in {WINDOW:.0f}s, oldest renewal seen {worst_age:.2f}s old"
    )
    assert probe_waited >= SLOW / 2, "the default executor was not saturated: the test shows nothing"
    assert not fenced_ever, "the leader stopped leading while the pool was busy"
    assert worst_age < TIMINGS.renew_deadline / 2, f"a renewal was {worst_age:.2f}s late"
    assert renewals >= WINDOW / (TIMINGS.retry_period + 0.2)
