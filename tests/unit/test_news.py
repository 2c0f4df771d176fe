"""A credential's Events: held back in a wave and posted in order after the reports waiting,
dropped on stop; good news within a namespace's budget."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from simacan_token_operator.controller.gates import REPORT, KubeGates
from simacan_token_operator.controller.news import EVENT_BURST, EVENT_INTERVAL, News
from simacan_token_operator.kube.client import KubeError, ObjectRef
from simacan_token_operator.reconcile.report import Note

ISSUED = Note("Normal", "Issued", "issued the first token")
EXPIRED = Note("Warning", "TokenExpired", "the token in the Secret has expired")


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
    news = News(poster, gates, time.monotonic)
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
    news = News(poster, gates, time.monotonic)
    async with gates.slot("team", REPORT):
        news.hold(ref("a"), ISSUED, "team/a")
        news.hold(ref("b", "other"), ISSUED, "other/b")
        await asyncio.sleep(0.01)
        await news.stop()
    await asyncio.sleep(0.01)
    assert poster.posted == []
    await asyncio.wait_for(news.drained(), 1)


async def test_a_namespace_posts_a_burst_of_good_news_then_one_per_interval_and_every_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """2,000 credentials' first sync in one namespace made 2,000 `Issued` Events: a request
    each beyond the two per refresh. Another namespace keeps its own budget; Warnings all go."""
    now = [1000.0]
    gates, poster = KubeGates(), Poster()
    news = News(poster, gates, lambda: now[0])
    caplog.set_level(logging.INFO, logger="simacan_token_operator.controller.news")
    for index in range(EVENT_BURST + 10):
        news.hold(ref(f"n{index}"), ISSUED, "team/n")
    for index in range(3):
        await news.post(ref(f"w{index}"), EXPIRED, "team/w", REPORT)
    news.hold(ref("other-1", "other"), ISSUED, "other/other-1")
    await asyncio.wait_for(news.drained(), 5)
    posted = [name for name in poster.posted if name.startswith("n")]
    assert posted == [f"n{index}" for index in range(EVENT_BURST)], "the burst, in order; the rest dropped"
    assert [name for name in poster.posted if name.startswith("w")] == ["w0", "w1", "w2"], "Warnings all go"
    assert "other-1" in poster.posted, "another namespace has its own budget"
    assert "more than 50 Normal Events at once" in caplog.text

    news.hold(ref("late-1"), ISSUED, "team/late-1")
    now[0] += EVENT_INTERVAL
    news.hold(ref("late-2"), ISSUED, "team/late-2")
    news.hold(ref("late-3"), ISSUED, "team/late-3")
    await asyncio.wait_for(news.drained(), 5)
    assert [name for name in poster.posted if name.startswith("late")] == ["late-2"], "one per interval"
    assert "namespace team: 11 Normal Events were not posted" in caplog.text

    now[0] += EVENT_BURST * EVENT_INTERVAL
    for index in range(EVENT_BURST):
        await news.post(ref(f"again{index}"), ISSUED, "team/again", REPORT)
    assert sum(name.startswith("again") for name in poster.posted) == EVENT_BURST, "the budget refills"
