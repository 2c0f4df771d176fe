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
from simacan_token_operator.kube.leader import LastChangeSeen, LeaderElector, LeaseTimings
from simacan_token_operator.kube.lease import LeaseClient
from tests.unit.kubeapi import api_client_for, emulated_api

TIMINGS = LeaseTimings(duration=1.0, renew_deadline=0.7, retry_period=0.1, write_margin=0.3)
"""Short, so each test takes a second or two; as in production, the renew deadline is the write
margin short of the duration. Whole seconds for the duration: the Lease stores it so."""


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
        await asyncio.sleep(0.1)
        writing.cancel()
        started = time.monotonic()
        await leader.release()
        released = time.monotonic() - started
        budget_left = leader._last_renewed + TIMINGS.duration - started
        return released, budget_left

    released, budget_left = asyncio.run(scenario())
    assert 0.3 < released <= budget_left + 0.5  # waited for the write (0.6 s), no longer than its budget
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


def test_another_holders_lease_is_free_a_duration_after_it_last_changed_as_seen_here() -> None:
    seen = LastChangeSeen("me", default_duration=15.0)
    theirs = {"holderIdentity": "them", "renewTime": "t1", "leaseDurationSeconds": 10, "leaseTransitions": 3}

    assert not seen.free_for_us(theirs, now=100.0)
    assert not seen.free_for_us(theirs, now=109.9)
    assert not seen.free_for_us({**theirs, "renewTime": "t2"}, now=109.9), "a renewal starts the wait anew"
    assert not seen.free_for_us({**theirs, "renewTime": "t2"}, now=119.8)
    assert seen.free_for_us({**theirs, "renewTime": "t2"}, now=119.9)
    assert seen.free_for_us({**theirs, "holderIdentity": "me"}, now=0.0), "ours to keep"
    assert seen.free_for_us({"holderIdentity": None}, now=0.0), "released"
    fresh = LastChangeSeen("me", default_duration=15.0)
    assert not fresh.free_for_us({"holderIdentity": "them"}, now=0.0)
    assert fresh.free_for_us({"holderIdentity": "them"}, now=15.0), "no duration written: the default"


def test_the_lease_keeps_acquire_time_and_counts_transitions_as_client_go_does(
    api: tuple[str, TcpProxy],
) -> None:
    direct, _ = api
    timeout = (1.0, 2.0)
    ours = LeaseClient(api_client_for(direct), "default", "fields-lease", "first", 15.0)
    theirs = LeaseClient(api_client_for(direct), "default", "fields-lease", "second", 15.0)

    ours.create(timeout)
    created = ours.get(timeout)["spec"]
    ours.take(ours.get(timeout), timeout)  # a renewal
    renewed = ours.get(timeout)["spec"]
    theirs.take(theirs.get(timeout), timeout)  # a take-over
    taken = theirs.get(timeout)["spec"]
    assert not ours.held_by_us(theirs.get(timeout))
    theirs.hand_back(theirs.get(timeout), timeout)
    released = theirs.get(timeout)["spec"]

    assert (created["holderIdentity"], created["leaseTransitions"], created["leaseDurationSeconds"]) == (
        "first",
        0,
        15,
    )
    assert renewed["acquireTime"] == created["acquireTime"] and renewed["leaseTransitions"] == 0
    assert renewed["renewTime"] >= created["renewTime"]
    assert taken["holderIdentity"] == "second" and taken["leaseTransitions"] == 1
    assert taken["acquireTime"] >= renewed["renewTime"]
    assert released["holderIdentity"] is None and released["leaseDurationSeconds"] == 1
    assert released["leaseTransitions"] == 1
