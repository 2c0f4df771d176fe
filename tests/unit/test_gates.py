"""The Kubernetes gates: passes (Secret writes) before status patches when both wait, and the
slot bookkeeping that priority adds (cancelled waiters, slots handed on)."""

from __future__ import annotations

import asyncio
from typing import Any

from simacan_token_operator.controller.gates import (
    NAMESPACE_CONCURRENCY,
    PASS,
    REPORT,
    KubeGates,
    PriorityGate,
    Wake,
)
from simacan_token_operator.controller.kinds import Namespaced
from simacan_token_operator.controller.worker import CredentialWorker
from simacan_token_operator.kube.client import KubeError
from tests.unit.test_reconcile_pass import NS, World, clock, fake_auth, world

FIXTURES = (fake_auth, clock, world)
"""The in-process world of tests/unit/test_reconcile_pass.py, whose fixtures these tests use."""


async def test_waiters_are_served_by_priority_then_in_arrival_order() -> None:
    gate = PriorityGate(1)
    await gate.acquire(PASS)
    served: list[str] = []

    async def wait(name: str, priority: int) -> None:
        await gate.acquire(priority)
        served.append(name)
        gate.release()

    tasks = [
        asyncio.create_task(wait(name, priority))
        for name, priority in [("report-1", REPORT), ("pass-1", PASS), ("report-2", REPORT), ("pass-2", PASS)]
    ]
    await asyncio.sleep(0)
    assert gate.waiting() == 4
    gate.release()
    await asyncio.gather(*tasks)
    assert served == ["pass-1", "pass-2", "report-1", "report-2"]
    assert gate.free == 1


async def test_a_cancelled_waiter_takes_no_slot_and_a_granted_one_hands_it_on() -> None:
    gate = PriorityGate(1)
    await gate.acquire(PASS)
    cancelled = asyncio.create_task(gate.acquire(PASS))
    granted = asyncio.create_task(gate.acquire(PASS))
    last = asyncio.create_task(gate.acquire(REPORT))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    gate.release()  # skips the cancelled waiter: `granted` gets the slot...
    granted.cancel()  # ...and is cancelled before it resumes: the slot goes on to `last`
    await asyncio.gather(cancelled, granted, return_exceptions=True)
    await asyncio.wait_for(last, timeout=1)
    assert gate.free == 0 and gate.waiting() == 0
    gate.release()
    assert gate.free == 1


async def test_a_namespace_gate_serves_its_passes_before_its_status_patches() -> None:
    gates = KubeGates(limit=8, per_namespace=2)
    order: list[str] = []
    release = asyncio.Event()

    async def call(name: str, priority: int) -> None:
        async with gates.slot("tenant", priority):
            order.append(name)
            await release.wait()

    holders = [asyncio.create_task(call(f"first-{i}", PASS)) for i in range(2)]
    await asyncio.sleep(0)
    waiters = [
        asyncio.create_task(call(name, priority))
        for name, priority in [("status-a", REPORT), ("pass-a", PASS), ("status-b", REPORT), ("pass-b", PASS)]
    ]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*holders, *waiters)
    assert order == ["first-0", "first-1", "pass-a", "pass-b", "status-a", "status-b"]
    assert gates.shared.free == 8 and len(gates.namespaces) == 0


async def test_a_first_sync_writes_every_token_secret_then_every_status_then_the_events(world: World) -> None:
    """More credentials in one namespace than its gate has slots, all due at once (a first
    sync once the account has its token): every token Secret is written before the first
    status patch goes out, so workloads get their tokens while the reports wait, and every
    status before the Issued Events, so the statuses say Ready as soon as they can."""
    assert world.runtime is not None
    calls: list[str] = []
    create, patch, post = world.kube.create_secret, world.kube.patch_status, world.kube.post_event

    async def create_secret(namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.005)  # an API server takes a while: calls overlap, as in production
        calls.append("secret")
        return await create(namespace, body)

    async def patch_status(*args: Any) -> dict[str, Any]:
        await asyncio.sleep(0.005)
        calls.append("status")
        return await patch(*args)

    async def post_event(*args: Any) -> None:
        await asyncio.sleep(0.005)
        calls.append("event")
        await post(*args)

    world.kube.create_secret = create_secret  # type: ignore[method-assign]
    world.kube.patch_status = patch_status  # type: ignore[method-assign,assignment]
    world.kube.post_event = post_event  # type: ignore[method-assign,assignment]
    world.runtime.known.epochs.listed(NS)  # as the Secret watch does: the login Secret is read once
    world.login_secret()
    world.credential("first")
    await world.run("first")  # the account's login: the passes below wait only for Kubernetes
    assert calls == ["secret", "event", "status"], "alone, the Issued Event comes before the status"
    calls.clear()
    names = [f"c{i}" for i in range(3 * NAMESPACE_CONCURRENCY)]
    for name in names:
        world.credential(name)
    await asyncio.gather(*(world.run(name) for name in names))
    await world.runtime.news.drained()

    assert calls == ["secret"] * len(names) + ["status"] * len(names) + ["event"] * len(names)
    assert all(world.ready(name, NS) == ("True", "TokenValid") for name in names)
    assert [event.reason for event in world.kube.events] == ["Issued"] * (len(names) + 1)


async def test_a_sleeping_worker_wakes_on_a_nudge_on_its_timer_and_not_for_a_cleared_flag() -> None:
    loop = asyncio.get_running_loop()
    wake = Wake()
    woken: list[float] = []

    def on_set() -> None:
        woken.append(loop.time())

    wake.set()
    wake.sleep(None, loop.time, on_set)
    assert len(woken) == 1, "a nudge before the sleep is not lost"

    wake.clear()
    wake.sleep(None, loop.time, on_set)
    await asyncio.sleep(0.01)
    assert len(woken) == 1, "a cleared flag does not wake"
    wake.set()
    wake.set()
    assert len(woken) == 2, "a nudge wakes, once"

    wake.clear()
    started = loop.time()
    wake.sleep(started + 0.05, loop.time, on_set)
    await asyncio.wait_for(until_woken(woken, 3), 1)
    assert woken[-1] - started >= 0.04 and wake.is_set(), "the timer sets the flag"

    wake.clear()
    wake.sleep(loop.time() + 0.02, loop.time, on_set)
    wake.cancel()
    await asyncio.sleep(0.05)
    assert len(woken) == 3, "a cancelled sleep neither times out nor wakes"
    wake.set()
    assert len(woken) == 3
    wake.clear()
    wake.sleep(None, loop.time, on_set)
    wake.set()
    assert len(woken) == 4, "a cancelled sleep leaves the wake usable"


async def until_woken(woken: list[float], count: int) -> None:
    while len(woken) < count:
        await asyncio.sleep(0.005)


async def test_a_sleeping_worker_holds_no_task(world: World) -> None:
    """Between rounds a credential is a flag and a timer: no asyncio task, which kept 1.5 KiB."""
    assert world.runtime is not None
    world.login_secret()
    body = world.kube.watched(world.credential("first"))
    worker = CredentialWorker(body, world.runtime, Namespaced())
    tasks_before = len(asyncio.all_tasks())
    worker.start()
    assert len(asyncio.all_tasks()) == tasks_before + 1, "a round runs as a task"
    await asyncio.wait_for(until_status(world, "first"), 10)
    await asyncio.wait_for(until_no_task(worker), 10)
    assert len(asyncio.all_tasks()) == tasks_before, "asleep, it holds none"
    assert world.ready("first", NS) == ("True", "TokenValid")
    writes = len(world.kube.secret_writes)
    worker.nudge()
    assert len(asyncio.all_tasks()) == tasks_before + 1, "a nudge starts a round"
    await asyncio.wait_for(until_no_task(worker), 10)
    assert len(world.kube.secret_writes) == writes, "a round with nothing to do writes nothing"
    await worker.stop()
    worker.nudge()
    assert len(asyncio.all_tasks()) == tasks_before, "a stopped worker starts no round"


async def until_status(world: World, name: str) -> None:
    while not world.status(name, NS):
        await asyncio.sleep(0.005)


async def until_no_task(worker: CredentialWorker) -> None:
    while worker._task is not None:
        await asyncio.sleep(0.005)


async def test_a_waiter_cancelled_in_the_queue_leaves_no_namespace_gate_behind() -> None:
    gates = KubeGates(limit=8, per_namespace=1)
    release = asyncio.Event()

    async def call() -> None:
        async with gates.slot("tenant", PASS):
            await release.wait()

    holder = asyncio.create_task(call())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(call())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    release.set()
    await holder
    assert gates.shared.free == 8 and len(gates.namespaces) == 0


async def test_an_event_held_back_in_a_wave_is_posted_even_when_its_status_patch_fails(world: World) -> None:
    """In a wave the Issued Event waits for the status patch; a patch that fails (500) must not
    swallow it: the next round has the Secret it wrote and will not say it again."""
    assert world.runtime is not None
    patch = world.kube.patch_status
    failing = {"c20"}  # in the middle of the wave: its Event is held back

    async def patch_status(plural: str, namespace: str, name: str, *args: Any) -> dict[str, Any]:
        await asyncio.sleep(0.005)
        if name in failing:
            failing.discard(name)
            raise KubeError("updating the status", 500, "Internal Server Error")
        return await patch(plural, namespace, name, *args)

    world.kube.patch_status = patch_status  # type: ignore[method-assign,assignment]
    world.runtime.known.epochs.listed(NS)
    world.login_secret()
    world.credential("first")
    await world.run("first")
    names = [f"c{i}" for i in range(3 * NAMESPACE_CONCURRENCY)]
    for name in names:
        world.credential(name)
    results = await asyncio.gather(*(world.run(name) for name in names), return_exceptions=True)
    await world.runtime.news.drained()

    assert [type(result) for result in results if isinstance(result, BaseException)] == [KubeError]
    assert [event.reason for event in world.kube.events] == ["Issued"] * (len(names) + 1)
    await asyncio.gather(*(world.run(name) for name in names))  # the retry says nothing new
    assert all(world.ready(name, NS) == ("True", "TokenValid") for name in names)
    assert [event.reason for event in world.kube.events] == ["Issued"] * (len(names) + 1)
