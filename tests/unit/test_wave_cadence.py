"""A shared account's refresh cadence while its wave is spread and the measured write rate
wavers: still one Auth API call per wave, two thirds into the token's life.

The controller of test_controller.py over several token lifetimes of the fake clock: each step
moves the clock to the next worker's due time and wakes the workers due then."""

from __future__ import annotations

import asyncio
import random
import statistics

from localenv.fakeauth import FakeAuthAPI
from simacan_token_operator.auth.pool import TokenPool
from tests.unit.conftest import FakeClock
from tests.unit.test_controller import Cluster, cluster
from tests.unit.test_reconcile_pass import clock, fake_auth
from tests.unit.test_watch_reads import deliver, serve, settled

HARNESS = (fake_auth, clock, cluster)
CREDENTIALS = 200
RATE = 0.3
"""Secret writes a second: 200 credentials need about 670 s each wave, more than the jitter's two
minutes, so their waves are spread; a third of the time the rate dips so low that the wave must
start earlier."""


async def test_a_wavering_rate_does_not_make_a_spread_wave_fetch_tokens_sooner(
    cluster: Cluster, clock: FakeClock, fake_auth: FakeAuthAPI
) -> None:
    """A wave's start moved earlier while the rate dipped is not a time to keep: before that was
    seen to, every dip stuck, and the account fetched a token about every 1,600 s, not 2,150 s
    (the median; a dip that lasts until the wave starts still moves one wave earlier)."""
    assert cluster.controller is not None
    runtime = cluster.controller.runtime
    wavering = random.Random(7)
    pool = TokenPool(runtime.pool._api, clock=clock, write_rate=lambda: RATE * wavering.uniform(0.5, 1.5))  # type: ignore[attr-defined]
    object.__setattr__(runtime, "pool", pool)
    await serve(cluster, *(f"c{i:03d}" for i in range(CREDENTIALS)))
    before, start = len(fake_auth.calls), clock()
    fetched: list[float] = []
    workers = list(cluster.controller.workers.values())
    while clock() < start + 3 * 3600:
        clock.now = max(clock(), min(w.due_at for w in workers if w.due_at is not None))
        for worker in workers:
            if worker.due_at is not None and worker.due_at <= clock():
                worker.nudge()
        await asyncio.sleep(0)
        await settled(cluster)
        deliver(cluster)
        fetched += [clock()] * (len(fake_auth.calls) - before - len(fetched))
    gaps = [later - earlier for earlier, later in zip([start, *fetched], fetched, strict=False)]
    assert len(fetched) >= 4, f"a token each wave: {gaps}"
    assert statistics.median(gaps) > 2000, f"seconds between the account's Auth API calls: {gaps}"
