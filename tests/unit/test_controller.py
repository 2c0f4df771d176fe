"""The controller and the worker of both kinds, in process: the dict-backed Kubernetes, the TLS
stand-in Auth API and a hand-moved clock; the workers' own loops run, woken by the events a
watch would deliver. Each test takes well under a second."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from localenv.auth_standin import FakeAuthAPI
from simacan_token_operator.app.metrics import Metrics
from simacan_token_operator.auth.client import AuthAPI, http_client
from simacan_token_operator.auth.pool import TokenPool
from simacan_token_operator.controller.routing import Controller
from simacan_token_operator.controller.runtime import Runtime
from simacan_token_operator.model.clusterspec import NamespaceInfo
from simacan_token_operator.model.spec import AuthURLPolicy
from tests.unit.conftest import PASSWORD, USERNAME, FakeClock
from tests.unit.fakekube import FakeKube
from tests.unit.test_reconcile_pass import auth, clock, deployment

FIXTURES = (auth, clock)
"""The stand-in Auth API over TLS and the hand-moved clock of tests/unit/test_reconcile_pass.py."""

SECRET = "simacan-token"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class Cluster:
    """One operator process (controller, pool) over a Kubernetes that outlives it."""

    kube: FakeKube
    clock: FakeClock
    auth: FakeAuthAPI
    api: AuthAPI
    controller: Controller | None = None

    def start(self) -> Controller:
        runtime = Runtime(
            kube=self.kube,
            pool=TokenPool(self.api, clock=self.clock),
            auth_policy=AuthURLPolicy(frozenset({f"127.0.0.1:{self.auth.port}"})),
            metrics=Metrics(),
            clock=self.clock,
        )
        self.controller = Controller(runtime)
        return self.controller

    async def restart(self, *credentials: dict[str, Any], namespaces: dict[str, NamespaceInfo]) -> None:
        """A new process: it lists namespaces and credentials (with their status) again."""
        assert self.controller is not None
        await self.controller.stop()
        controller = self.start()
        controller.namespaces_listed(namespaces)
        for body in credentials:
            await controller.observe(self.with_status(body))

    def with_status(self, body: dict[str, Any]) -> dict[str, Any]:
        """As a watch event delivers it: with its resourceVersion and status as stored."""
        return self.kube.watched(body)

    def login_secret(self, namespace: str) -> None:
        data = {"username": b64(USERNAME), "password": b64(PASSWORD)}
        self.kube.put_secret(namespace, {"metadata": {"name": "login"}, "data": data})

    def token(self, namespace: str, name: str) -> str | None:
        secret = self.kube.secrets.get((namespace, name))
        return base64.b64decode(secret["data"]["token"]).decode() if secret else None

    def credential(self, namespace: str, name: str) -> dict[str, Any]:
        return {
            "apiVersion": "auth.simacan.com/v1alpha1",
            "kind": "SimacanCredential",
            "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "generation": 1},
            "spec": {"credentialsSecretRef": {"name": "login"}, "authURL": self.auth.base_url},
        }

    def cluster_credential(self, name: str, selector: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "auth.simacan.com/v1alpha1",
            "kind": "ClusterSimacanCredential",
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "generation": 1},
            "spec": {
                "credentialsSecretRef": {"name": "login", "namespace": "platform"},
                "secretName": SECRET,
                "authURL": self.auth.base_url,
                "namespaceSelector": selector,
            },
        }


async def until(condition: Callable[[], bool], what: str, timeout: float = 2.0) -> None:
    """Poll with a deadline: the workers run on the same loop, so yielding lets them work."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.01)


def ns(**labels: str) -> NamespaceInfo:
    return NamespaceInfo(labels, terminating=False)


@pytest.fixture
async def cluster(auth: FakeAuthAPI, clock: FakeClock) -> AsyncIterator[Cluster]:
    async with http_client(str(auth.ca_file)) as http:
        world = Cluster(FakeKube(), clock, auth, AuthAPI(http, clock=clock))
        world.start()
        try:
            yield world
        finally:
            assert world.controller is not None
            await world.controller.stop()


TEAMS = {"platform": ns(), "team-a": ns(team="yes"), "team-b": ns(team="yes"), "other": ns()}


async def served(cluster: Cluster) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Two SimacanCredentials (team-a, team-b) and a ClusterSimacanCredential selecting both."""
    controller = cluster.controller
    assert controller is not None
    for namespace in ("platform", "team-a", "team-b"):
        cluster.login_secret(namespace)
    controller.namespaces_listed(dict(TEAMS))
    a, b = cluster.credential("team-a", "api"), cluster.credential("team-b", "api")
    shared = cluster.cluster_credential("shared", {"matchLabels": {"team": "yes"}})
    for body in (a, b, shared):
        await controller.observe(cluster.with_status(body))
    await until(
        lambda: all(cluster.token(n, s) for n in ("team-a", "team-b") for s in ("api", SECRET)),
        "every token Secret written",
    )
    await until(lambda: ("", "shared") in cluster.kube.statuses, "the cluster credential's status")
    return a, b, shared


async def test_a_secret_event_reaches_the_right_worker_and_target(cluster: Cluster) -> None:
    await served(cluster)
    controller = cluster.controller
    assert controller is not None
    assert cluster.auth.count() == 1, "one login for all: same account"

    cluster.kube.remove_secret("team-a", "api")
    cluster.kube.remove_secret("team-b", SECRET)
    writes = len(cluster.kube.secret_writes)
    controller.secret_changed("team-a", "api")
    controller.secret_changed("team-b", SECRET)
    await until(lambda: bool(cluster.token("team-a", "api") and cluster.token("team-b", SECRET)), "restored")

    assert sorted(cluster.kube.secret_writes[writes:]) == [("create", "api"), ("create", SECRET)]
    assert cluster.token("team-b", "api") and cluster.token("team-a", SECRET)
    assert len(cluster.kube.secret_writes) == writes + 2, "no other Secret was written"
    assert cluster.auth.count() == 1, "restored from the token held"


async def test_a_namespace_that_starts_or_stops_matching_changes_the_targets(cluster: Cluster) -> None:
    await served(cluster)
    controller = cluster.controller
    assert controller is not None

    controller.namespace_changed("other", ns(team="yes"))
    await until(lambda: cluster.token("other", SECRET) is not None, "a Secret in the new namespace")
    controller.namespace_changed("team-a", ns())
    await until(lambda: ("team-a", SECRET) not in cluster.kube.secrets, "the Secret gone where deselected")

    assert cluster.kube.secret_deletes == [("team-a", SECRET)]
    assert cluster.token("team-a", "api"), "the namespaced credential's Secret stays"
    status = cluster.kube.statuses[("", "shared")]
    await until(lambda: cluster.kube.statuses[("", "shared")].get("namespaces") == 2, "two namespaces")
    assert status["conditions"][0]["status"] == "True"


async def test_a_refresh_request_on_a_cluster_credential_is_honoured_once(cluster: Cluster) -> None:
    _, _, shared = await served(cluster)
    controller = cluster.controller
    assert controller is not None
    before = {n: cluster.token(n, SECRET) for n in ("team-a", "team-b")}
    cluster.clock.advance(1)

    asked = {**shared, "metadata": {**shared["metadata"], "annotations": {}}}
    asked["metadata"]["annotations"]["auth.simacan.com/refresh-requested-at"] = "2026-12-06T10:00:00Z"
    cluster.kube.edited("", "shared")
    await controller.observe(cluster.with_status(asked))
    await until(
        lambda: cluster.kube.statuses[("", "shared")].get("lastRefreshRequest") == "2026-12-06T10:00:00Z",
        "the request handled",
    )
    after = {n: cluster.token(n, SECRET) for n in ("team-a", "team-b")}
    assert after["team-a"] == after["team-b"] != before["team-a"], "one new token for every namespace"
    assert cluster.auth.count() == 2

    await controller.observe(cluster.with_status(asked))  # the same request again: nothing to do
    controller.resync()
    await asyncio.sleep(0.1)
    assert cluster.auth.count() == 2


async def test_a_restart_of_the_process_makes_no_login(cluster: Cluster) -> None:
    a, b, shared = await served(cluster)
    await until(
        lambda: all("staleConsumerCount" in status for status in cluster.kube.statuses.values()),
        "every status complete (the stale-consumer check reports after the first pass)",
    )
    writes, patches = len(cluster.kube.secret_writes), cluster.kube.status_patches

    await cluster.restart(a, b, shared, namespaces=dict(TEAMS))
    controller = cluster.controller
    assert controller is not None
    await until(lambda: all(w.due_at is not None for w in controller.workers.values()), "every worker ran")

    await asyncio.sleep(0.2)  # room for the surveys the new process starts
    assert cluster.auth.count() == 1
    assert len(cluster.kube.secret_writes) == writes, "nothing rewritten"
    assert cluster.kube.status_patches == patches, "no status rewritten, the cluster's included"
    assert all(status["conditions"][0]["status"] == "True" for status in cluster.kube.statuses.values())


async def test_a_cluster_credential_reports_stale_consumers_of_every_selected_namespace(
    cluster: Cluster,
) -> None:
    """The stale-consumer check runs per selected namespace and is summed up in one status."""
    controller = cluster.controller
    assert controller is not None
    cluster.kube.put_workload("team-a", "Deployment", deployment("app", env_from=SECRET))
    cluster.kube.put_workload("team-b", "Deployment", deployment("db", env_from=SECRET))
    cluster.kube.put_workload("team-b", "Deployment", deployment("web"))  # mounts nothing: fine
    await served(cluster)

    def reported() -> bool:
        return cluster.kube.statuses[("", "shared")].get("staleConsumerCount") == 2

    await until(reported, "two stale consumers in the cluster credential's status")
    status = cluster.kube.statuses[("", "shared")]
    assert status["staleConsumers"] == ["team-a/Deployment/app", "team-b/Deployment/db"]
    condition = next(c for c in status["conditions"] if c["type"] == "ConsumersStale")
    assert (condition["status"], condition["reason"]) == ("True", "ReadsTokenAtStart")
    assert "team-a/Deployment/app" in condition["message"]
    assert any(e.reason == "ConsumersStale" and e.name == "shared" for e in cluster.kube.events)
