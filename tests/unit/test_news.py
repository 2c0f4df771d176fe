"""Normal Events held back in a wave: posted in order after the reports waiting, dropped on stop."""

from __future__ import annotations

import asyncio

from simacan_token_operator.controller.gates import REPORT, KubeGates
from simacan_token_operator.controller.news import HeldNews
from simacan_token_operator.kube.client import KubeError, ObjectRef
from simacan_token_operator.reconcile.report import Note

ISSUED = Note("Normal", "Issued", "issued the first token")


def ref(name: str, namespace: str = "team") -> ObjectRef:
    return ObjectRef(namespace, name, f"uid-{name}", "auth.simacan.com/v1alpha1", "SimacanCredential")


class Poster:
    def __init__(self, failing: set[str] | None = None) -> None:
        self.posted: list[str] = []
        self.failing = failing or set()

    async def post_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        await asyncio.sleep(0.001)
        if ref.name in self.failing:
            raise KubeError("posting an Event", 500, "Internal Server Error")
        self.posted.append(ref.name)


async def test_held_events_go_in_order_after_the_reports_waiting_and_a_failure_stops_none() -> None:
    gates, poster = KubeGates(limit=1, per_namespace=1), Poster(failing={"b"})
    news = HeldNews(poster, gates)
    order: list[str] = []
    release = asyncio.Event()

    async def report(name: str) -> None:
        async with gates.slot("team", REPORT):
            order.append(name)
            await release.wait()

    holder = asyncio.create_task(report("status-1"))
    await asyncio.sleep(0)
    for name in ("a", "b", "c"):
        news.hold(ref(name), ISSUED, f"team/{name}")
    waiting = asyncio.create_task(report("status-2"))
    await asyncio.sleep(0.01)
    assert poster.posted == [], "nothing is posted while a report holds the slot"
    release.set()
    await asyncio.gather(holder, waiting)
    await asyncio.wait_for(news.drained(), 5)
    assert order == ["status-1", "status-2"]
    assert poster.posted == ["a", "c"], "in order; the one that failed is logged and skipped"
    news.hold(ref("d"), ISSUED, "team/d")
    await asyncio.wait_for(news.drained(), 5)
    assert poster.posted == ["a", "c", "d"], "a namespace drained once takes new ones"


async def test_a_stopped_operator_posts_nothing_it_held() -> None:
    gates, poster = KubeGates(limit=1, per_namespace=1), Poster()
    news = HeldNews(poster, gates)
    async with gates.slot("team", REPORT):
        news.hold(ref("a"), ISSUED, "team/a")
        news.hold(ref("b", "other"), ISSUED, "other/b")
        await asyncio.sleep(0.01)
        await news.stop()
    await asyncio.sleep(0.01)
    assert poster.posted == []
    await asyncio.wait_for(news.drained(), 1)
