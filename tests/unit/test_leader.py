"""Leader election: a leader whose renewals hang stops writing at its renew deadline, strictly
before a standby may take over. The leader reaches the API through a proxy that black-holes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from localenv.tcpproxy import TcpProxy
from simacan_token_operator.kube.client import Kube
from simacan_token_operator.kube.leader import LeaderElector, LeaseTimings
from tests.unit.kubeapi import api_client_for, emulated_api

TIMINGS = LeaseTimings(duration=3.0, renew_deadline=2.0, retry_period=0.3)


@pytest.fixture
def api() -> Iterator[tuple[str, TcpProxy]]:
    """The URL of an emulated API server, and a proxy in front of it."""
    with emulated_api() as url, TcpProxy("127.0.0.1", int(url.rsplit(":", 1)[1])) as proxy:
        yield url, proxy


def _elector(url: str, identity: str, changes: list[bool] | None = None) -> LeaderElector:
    return LeaderElector(
        api_client_for(url),
        "default",
        "unit-lease",
        identity,
        TIMINGS,
        on_leading=None if changes is None else changes.append,
    )


def test_a_black_holed_leader_stops_writing_before_the_standby_takes_over(api: tuple[str, TcpProxy]) -> None:
    direct, proxy = api
    proxied = f"http://127.0.0.1:{proxy.port}"
    changes: list[bool] = []
    leader_lost: list[bool] = []

    async def scenario() -> tuple[float, float, float]:
        leader = _elector(proxied, "leader", changes)
        standby = _elector(direct, "standby")
        await leader.acquire()
        holding = asyncio.create_task(leader.hold())
        await asyncio.sleep(TIMINGS.retry_period * 3)  # a few good renewals
        assert leader.write_budget() is not None and not holding.done()

        proxy.blackhole()
        blackholed = time.monotonic()
        taking_over = asyncio.create_task(standby.acquire())
        # The fence closes by the clock, whether or not the loop got to run the timer yet.
        while leader.write_budget() is not None:
            await asyncio.sleep(0.01)
        fenced = time.monotonic()
        await asyncio.wait_for(holding, TIMINGS.renew_deadline)  # returns without the hung renewal
        leader_lost.append(leader.lost)
        await asyncio.wait_for(taking_over, TIMINGS.duration * 3)
        return blackholed, fenced, time.monotonic()

    blackholed, fenced, standby_won = asyncio.run(scenario())
    assert fenced - blackholed <= TIMINGS.renew_deadline + 0.2
    assert fenced < standby_won
    # The standby may only win a full lease duration after the last renewal it saw.
    assert standby_won - fenced >= TIMINGS.duration - TIMINGS.renew_deadline - 0.2
    assert changes == [True, False]
    assert leader_lost == [True]
    print(
        f"fence closed {fenced - blackholed:.2f}s after the black hole; "
        f"standby led {standby_won - fenced:.2f}s later"
    )


def test_a_clean_hand_over_waits_for_a_write_whose_caller_was_cancelled(api: tuple[str, TcpProxy]) -> None:
    """Stopping cancels the workers, not the threads sending their writes: the Lease is released
    only once the write in flight has ended, so it cannot land after the next leader's."""
    direct, proxy = api
    writes_via_proxy = f"http://127.0.0.1:{proxy.port}"

    async def scenario() -> tuple[float, float]:
        leader = _elector(direct, "leader")
        await leader.acquire()
        kube = Kube(api_client_for(writes_via_proxy), fence=leader)
        proxy.blackhole()  # the write goes out and hangs
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque"}
        writing = asyncio.create_task(kube.create_secret("default", secret))
        await asyncio.sleep(0.2)
        writing.cancel()
        started = time.monotonic()
        await leader.release()
        released = time.monotonic() - started
        budget_left = leader._last_renewed + TIMINGS.duration - started
        return released, budget_left

    released, budget_left = asyncio.run(scenario())
    assert 0.5 < released <= budget_left + 0.5  # waited for the write, no longer than its budget
    lease = client.CoordinationV1Api(api_client_for(api[0])).read_namespaced_lease("unit-lease", "default")
    assert lease.spec is not None and lease.spec.holder_identity is None


def test_release_ends_holding_quietly_and_never_takes_the_lease_back(api: tuple[str, TcpProxy]) -> None:
    direct, _ = api
    leases = client.CoordinationV1Api(api_client_for(direct))

    async def scenario() -> None:
        leader = _elector(direct, "leader")
        await leader.acquire()
        holding = asyncio.create_task(leader.hold())
        await asyncio.sleep(TIMINGS.retry_period * 2)
        await leader.release()
        await asyncio.wait_for(holding, 1)  # release() ends hold() at once
        assert not leader.lost and leader.write_budget() is None
        await asyncio.sleep(TIMINGS.retry_period * 3)  # no renewal after the release

    asyncio.run(scenario())
    lease = leases.read_namespaced_lease("unit-lease", "default")
    assert lease.spec is not None and lease.spec.holder_identity is None
