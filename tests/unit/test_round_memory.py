"""What a round waiting for its Kubernetes slot keeps. In a wave (a first sync, a shared token's
refresh) every credential of a namespace is due at once, and all but a few of their rounds wait:
at 10,000 credentials each byte here is 10 kB of the operator's peak, which the process keeps."""

from __future__ import annotations

import asyncio
import tracemalloc

from simacan_token_operator.controller.gates import NAMESPACE_CONCURRENCY, PASS, Slot
from tests.unit.conftest import FakeClock
from tests.unit.test_controller import Cluster, cluster
from tests.unit.test_reconcile_pass import clock, fake_auth
from tests.unit.test_watch_reads import NS, serve, settled

HARNESS = (fake_auth, clock, cluster)
ROUNDS = 300


async def test_a_round_waiting_for_its_slot_keeps_under_four_kib(cluster: Cluster, clock: FakeClock) -> None:
    """4.8 KiB before the gates' slot was a class with slots rather than two generator-based
    context managers, and before a waiting round kept its empty sets; 3.2 KiB after."""
    await serve(cluster, *(f"c{i:04d}" for i in range(ROUNDS)))
    assert cluster.controller is not None
    gates = cluster.controller.runtime.gates
    # Take every slot the namespace may use, so that every round waits. Not "until one takes
    # longer than a moment": on a busy machine that stopped early and let rounds run their passes.
    held: list[Slot] = [gates.slot(NS, PASS) for _ in range(NAMESPACE_CONCURRENCY)]
    for slot in held:
        await slot.__aenter__()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for worker in cluster.controller.workers.values():
            worker.nudge()
        await asyncio.sleep(0.3)
        per_round = (tracemalloc.get_traced_memory()[0] - before) / ROUNDS
        waiting = gates.queued(NS)
    finally:
        tracemalloc.stop()
        for slot in held:
            await slot.__aexit__(None, None, None)
    await settled(cluster)
    assert waiting, "the rounds waited for a slot"
    assert per_round < 4096, f"{per_round:.0f} bytes per waiting round"
