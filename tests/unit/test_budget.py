"""The request budget: a burst, then the steady rate; a 429's hold-off; waiting never blocks the loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from simacan_token_operator.kube.budget import RequestBudget
from tests.unit.conftest import FakeClock


def _delays(budget: RequestBudget, count: int) -> list[float]:
    return [round(budget.reserve(), 6) for _ in range(count)]


def test_a_burst_goes_at_once_and_the_rest_at_the_steady_rate() -> None:
    clock = FakeClock(1000.0)
    budget = RequestBudget(qps=10, burst=3, clock=clock)
    assert _delays(budget, 6) == [0, 0, 0, 0.1, 0.2, 0.3]


def test_an_idle_budget_refills_up_to_its_burst_and_no_further() -> None:
    clock = FakeClock(1000.0)
    budget = RequestBudget(qps=10, burst=3, clock=clock)
    _delays(budget, 6)  # the last one is sent at +0.3 s
    clock.advance(0.35)  # 0.05 s after the last send: half a request earned since
    assert _delays(budget, 1) == [0.05]
    clock.advance(60)  # a long idle spell earns the burst, not 600 requests
    assert _delays(budget, 4) == [0, 0, 0, 0.1]


def test_a_hold_off_sends_nothing_until_it_ends_then_resumes_without_a_burst() -> None:
    clock = FakeClock(1000.0)
    budget = RequestBudget(qps=10, burst=5, clock=clock)
    budget.hold_off(2.0)
    assert _delays(budget, 3) == [2.0, 2.1, 2.2]
    budget.hold_off(0.5)  # a shorter hold-off does not bring the queue forward
    assert _delays(budget, 1) == [2.3]


def test_a_cancelled_caller_gives_its_place_back() -> None:
    clock = FakeClock(1000.0)
    budget = RequestBudget(qps=10, burst=1, clock=clock)
    assert _delays(budget, 3) == [0, 0.1, 0.2]
    budget.give_back()  # the caller waiting for +0.2 s gave up
    assert _delays(budget, 1) == [0.2]


def test_waiting_is_cancellable_and_the_place_is_returned() -> None:
    clock = FakeClock(1000.0)  # frozen: the real sleep below decides nothing about the budget
    budget = RequestBudget(qps=1, burst=1, clock=clock)

    async def scenario() -> None:
        await asyncio.wait_for(budget.wait(), 0.1)  # the burst: at once
        waiting = asyncio.create_task(budget.wait())  # one second away
        await asyncio.sleep(0.05)
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())
    assert _delays(budget, 1) == [1.0], "the cancelled caller's second is free again"


@pytest.mark.parametrize(("qps", "burst"), [(0, 10), (-1, 10), (10, 0)])
def test_a_budget_without_room_is_refused(qps: float, burst: int) -> None:
    with pytest.raises(ValueError, match="qps > 0 and burst >= 1"):
        RequestBudget(qps=qps, burst=burst)


def test_callers_waiting_for_the_budget_leave_the_event_loop_free() -> None:
    budget = RequestBudget(qps=20, burst=2)
    callers = 12

    async def scenario() -> tuple[float, float, int]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticking = asyncio.create_task(ticker())
        started = time.monotonic()
        await asyncio.gather(*(budget.wait() for _ in range(callers)))
        took = time.monotonic() - started
        done.set()
        await ticking
        return took, max(gaps), len(gaps)

    took, worst_gap, ticks = asyncio.run(scenario())
    # 2 at once, then 10 more at 20 a second: the last leaves 0.5 s after the first
    assert 0.45 <= took < 1.5
    assert ticks >= 20 and worst_gap < 0.2, f"the loop stalled for {worst_gap:.3f}s"
    print(f"{callers} callers through the budget in {took:.2f}s; longest loop gap {worst_gap * 1000:.0f} ms")
