"""Workers begin once kopf has handed over every credential listed at start (controller/startgate.py):
the controller and its workers in process over the dict-backed Kubernetes and the TLS fake Auth API,
with the start list answered by a stand-in."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from simacan_token_operator.controller.routing import Controller
from simacan_token_operator.controller.startgate import (
    LIST_PAGE,
    ListScope,
    credential_scopes,
    hold_until_arrived,
)
from simacan_token_operator.kube.client import KubeError, NamePage
from simacan_token_operator.model.clusterspec import CLUSTER_KIND, CLUSTER_PLURAL
from simacan_token_operator.model.spec import KIND, PLURAL
from tests.unit.test_controller import Cluster, cluster, until
from tests.unit.test_reconcile_pass import clock, fake_auth

FIXTURES = (cluster, fake_auth, clock)
"""test_controller.py's world of one operator process, and what it stands on."""

NAMES = [("team-a", f"api-{index}") for index in range(5)]


@dataclass
class Lister:
    """Answers the start list with `names`, `page` at a time; `fault` instead, if set."""

    names: list[tuple[str, str]]
    page: int = 2
    fault: KubeError | None = None
    pages: list[tuple[str, str | None, int, str | None]] = field(default_factory=list)
    """(plural, namespace, limit, continue) of every page asked for."""

    async def list_names(
        self, plural: str, namespace: str | None, limit: int, continue_token: str | None
    ) -> NamePage:
        self.pages.append((plural, namespace, limit, continue_token))
        if self.fault is not None:
            raise self.fault
        start = int(continue_token or 0)
        end = start + self.page
        return NamePage(tuple(self.names[start:end]), str(end) if end < len(self.names) else None)


def holding(cluster: Cluster, lister: Lister, limit: float = 10.0) -> asyncio.Task[None]:
    controller = cluster.controller
    assert controller is not None
    scopes = [ListScope(KIND, PLURAL, "team-a")]
    hold = hold_until_arrived(controller.runtime.start_gate, lister, scopes, controller.workers, limit)
    assert not controller.runtime.start_gate.is_open, "held at once, before any credential can arrive"
    return hold


async def test_no_worker_begins_before_the_last_listed_credential_has_arrived(cluster: Cluster) -> None:
    controller = cluster.controller
    assert controller is not None
    cluster.login_secret("team-a")
    lister = Lister(list(NAMES))
    hold = holding(cluster, lister)
    bodies = [cluster.with_status(cluster.credential(namespace, name)) for namespace, name in NAMES]
    for body in bodies[:-1]:
        await controller.observe(body)
    await until(lambda: len(lister.pages) == 3, "the list read, two names a page")
    for _ in range(20):
        await asyncio.sleep(0.01)  # room for a worker that should not run

    assert cluster.kube.secret_writes == [] and cluster.fake_auth.count() == 0, "every worker waits"
    assert not hold.done()

    await controller.observe(bodies[-1])
    await until(lambda: len(cluster.kube.secret_writes) == len(NAMES), "every token Secret written")
    await hold
    assert [(plural, ns, limit) for plural, ns, limit, _ in lister.pages] == [
        (PLURAL, "team-a", LIST_PAGE)
    ] * 3
    assert [token for *_, token in lister.pages] == [None, "2", "4"]
    assert cluster.fake_auth.count() == 1, "one login for the whole wave"
    await until(lambda: len(cluster.kube.statuses) == len(NAMES), "every status written")
    await asyncio.sleep(0.2)  # room for a second round that should not come
    assert cluster.kube.status_patches == len(NAMES), "the namespace surveyed while held: one status each"
    for status in cluster.kube.statuses.values():
        assert [c["type"] for c in status["conditions"]] == ["Ready", "ConsumersStale"]


async def one_of_two_arrived(cluster: Cluster, limit: float = 10.0) -> tuple[Controller, asyncio.Task[None]]:
    """Two credentials listed, the first handed over: its worker must wait."""
    controller = cluster.controller
    assert controller is not None
    cluster.login_secret("team-a")
    hold = holding(cluster, Lister(NAMES[:2]), limit)
    await controller.observe(cluster.with_status(cluster.credential(*NAMES[0])))
    await asyncio.sleep(0.05)
    assert cluster.kube.secret_writes == [], "held"
    return controller, hold


async def test_a_credential_deleted_before_it_arrived_is_not_waited_for(cluster: Cluster) -> None:
    controller, hold = await one_of_two_arrived(cluster)
    await controller.forget(KIND, *NAMES[1])  # kopf's DELETED event
    await until(lambda: len(cluster.kube.secret_writes) == 1, "the one remaining credential served")
    await hold


async def test_one_that_never_arrives_holds_the_workers_only_until_the_limit(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "simacan_token_operator.controller.startgate")
    _, hold = await one_of_two_arrived(cluster, limit=0.3)
    await until(lambda: len(cluster.kube.secret_writes) == 1, "served once the limit passed")
    await hold
    assert "1 of 2 credentials listed at start had not arrived" in caplog.text


async def test_a_failed_list_lets_the_workers_begin_at_once(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    controller = cluster.controller
    assert controller is not None
    cluster.login_secret("team-a")
    fault = KubeError("listing simacancredentials in team-a", 403, "forbidden")
    await holding(cluster, Lister([], fault=fault))
    assert controller.runtime.start_gate.is_open

    await controller.observe(cluster.with_status(cluster.credential(*NAMES[0])))
    await until(lambda: len(cluster.kube.secret_writes) == 1, "served without waiting for the limit")
    assert "listing simacancredentials in team-a failed: HTTP 403 forbidden" in caplog.text


async def test_a_cancelled_hold_leaves_the_workers_waiting_to_be_stopped(cluster: Cluster) -> None:
    controller, hold = await one_of_two_arrived(cluster)
    hold.cancel()
    await asyncio.sleep(0.05)

    assert not controller.runtime.start_gate.is_open
    await controller.stop()
    assert cluster.kube.secret_writes == [], "the process is leaving: no pass began"


def test_the_start_list_covers_what_kopf_watches() -> None:
    assert credential_scopes(["a", "b"], cluster=False) == [
        ListScope(KIND, PLURAL, "a"),
        ListScope(KIND, PLURAL, "b"),
    ]
    assert credential_scopes([], cluster=True) == [
        ListScope(KIND, PLURAL, None),
        ListScope(CLUSTER_KIND, CLUSTER_PLURAL, None),
    ]
