"""The controller and the worker of both kinds, in process: the dict-backed Kubernetes, the TLS
fake Auth API and a hand-moved clock; the workers' own loops run, woken by the events a
watch would deliver. Each test takes well under a second."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest

from localenv.fakeauth import FakeAuthAPI
from simacan_token_operator.app.metrics import Metrics
from simacan_token_operator.auth.client import AuthAPI, http_client
from simacan_token_operator.auth.pool import TokenPool
from simacan_token_operator.controller.routing import Controller, concerns
from simacan_token_operator.controller.runtime import Runtime
from simacan_token_operator.controller.worker import CredentialWorker
from simacan_token_operator.model.clusterspec import OWNER_LABEL, NamespaceInfo
from simacan_token_operator.model.spec import AuthURLPolicy
from simacan_token_operator.reconcile.tokensecret import (
    EXPIRES_AT_ANNOTATION,
    REFRESHED_AT_ANNOTATION,
    digest,
    rfc3339_precise,
)
from tests.unit.conftest import PASSWORD, USERNAME, FakeClock
from tests.unit.fakekube import FakeKube
from tests.unit.test_reconcile_pass import clock, deployment, fake_auth

FIXTURES = (fake_auth, clock)
"""The fake Auth API over TLS and the hand-moved clock of tests/unit/test_reconcile_pass.py."""

SECRET = "simacan-token"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class Cluster:
    """One operator process (controller, pool) over a Kubernetes that outlives it."""

    kube: FakeKube
    clock: FakeClock
    fake_auth: FakeAuthAPI
    api: AuthAPI
    controller: Controller | None = None

    def start(self) -> Controller:
        runtime = Runtime(
            kube=self.kube,
            pool=TokenPool(self.api, clock=self.clock),
            auth_policy=AuthURLPolicy(frozenset({f"127.0.0.1:{self.fake_auth.port}"})),
            metrics=Metrics(),
            clock=self.clock,
            cluster_credentials_namespace="platform",
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
            "spec": {"credentialsSecretRef": {"name": "login"}, "authURL": self.fake_auth.base_url},
        }

    def cluster_credential(
        self, name: str, selector: dict[str, Any], credentials_namespace: str | None = "platform"
    ) -> dict[str, Any]:
        ref = (
            {"name": "login"}
            if credentials_namespace is None
            else {"name": "login", "namespace": credentials_namespace}
        )
        return {
            "apiVersion": "auth.simacan.com/v1alpha1",
            "kind": "ClusterSimacanCredential",
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "generation": 1},
            "spec": {
                "credentialsSecretRef": ref,
                "secretName": SECRET,
                "authURL": self.fake_auth.base_url,
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
async def cluster(fake_auth: FakeAuthAPI, clock: FakeClock) -> AsyncIterator[Cluster]:
    async with http_client(str(fake_auth.ca_file)) as http:
        world = Cluster(FakeKube(), clock, fake_auth, AuthAPI(http, clock=clock))
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
    assert cluster.fake_auth.count() == 1, "one login for all: same account"

    cluster.kube.remove_secret("team-a", "api")
    cluster.kube.remove_secret("team-b", SECRET)
    writes = len(cluster.kube.secret_writes)
    controller.secret_changed("team-a", "api")
    controller.secret_changed("team-b", SECRET)
    await until(lambda: bool(cluster.token("team-a", "api") and cluster.token("team-b", SECRET)), "restored")

    assert sorted(cluster.kube.secret_writes[writes:]) == [("create", "api"), ("create", SECRET)]
    assert cluster.token("team-b", "api") and cluster.token("team-a", SECRET)
    assert len(cluster.kube.secret_writes) == writes + 2, "no other Secret was written"
    assert cluster.fake_auth.count() == 1, "restored from the token held"


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
    assert cluster.fake_auth.count() == 2

    await controller.observe(cluster.with_status(asked))  # the same request again: nothing to do
    controller.resync()
    await asyncio.sleep(0.1)
    assert cluster.fake_auth.count() == 2


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
    assert cluster.fake_auth.count() == 1
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


@pytest.mark.parametrize("lives", [-600, 600], ids=["shorter-replaced", "longer-adopted"])
async def test_a_self_made_token_in_a_selected_namespace_speaks_neither_in_status_nor_metrics(
    cluster: Cluster, lives: int
) -> None:
    await served(cluster)
    controller = cluster.controller
    assert controller is not None
    metrics = controller.runtime.metrics
    assert isinstance(metrics, Metrics)
    status = dict(cluster.kube.statuses[("", "shared")])
    metric = ("simacan_token_expiry_timestamp_seconds", {"namespace": "", "name": "shared"})
    expiry = metrics.registry.get_sample_value(*metric)
    assert expiry is not None

    # With annotations that tell a plausible story. Shorter-lived than the operator's token: it
    # is replaced by that token. Longer-lived: the namespace adopts it (it is that tenant's
    # Secret; two operators converge so), but it speaks for no one else.
    exp = int(expiry) + lives
    forged = jwt.encode({"exp": exp, "sub": "attacker"}, "t" * 32, algorithm="HS256")
    secret = dict(cluster.kube.secrets[("team-b", SECRET)])
    secret["data"] = {**secret["data"], "token": b64(forged)}
    secret["metadata"] = dict(secret["metadata"])
    secret["metadata"]["annotations"] = {
        **secret["metadata"]["annotations"],
        EXPIRES_AT_ANNOTATION: rfc3339_precise(exp),
        REFRESHED_AT_ANNOTATION: rfc3339_precise(cluster.clock.now),
    }
    cluster.kube.put_secret("team-b", secret)
    controller.secret_changed("team-b", SECRET)
    worker = next(w for w in controller.workers.values() if not w.kind.namespaced)
    await until(
        lambda: (
            worker.targets["team-b"].memory.written_digest == digest(forged)
            or cluster.token("team-b", SECRET) != forged
        ),
        "the pass saw the token",
    )
    await asyncio.sleep(0.05)  # the round's report follows the pass on the same loop

    after = cluster.kube.statuses[("", "shared")]
    assert (after["subject"], after["expiresAt"]) == (status["subject"], status["expiresAt"])
    assert metrics.registry.get_sample_value(*metric) == expiry
    assert cluster.fake_auth.count() == 1


def ready_of(cluster: Cluster, name: str) -> tuple[str, str] | None:
    status = cluster.kube.statuses.get(("", name)) or {}
    ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
    return (ready["status"], ready["reason"]) if ready else None


async def test_a_credentials_secret_outside_the_configured_namespace_is_invalid_spec_and_never_read(
    cluster: Cluster,
) -> None:
    controller = cluster.controller
    assert controller is not None
    for namespace in ("platform", "team-a"):
        cluster.login_secret(namespace)
    controller.namespaces_listed(dict(TEAMS))
    foreign = cluster.cluster_credential(
        "fleet", {"matchLabels": {"team": "yes"}}, credentials_namespace="team-a"
    )
    await controller.observe(cluster.with_status(foreign))
    await until(lambda: ready_of(cluster, "fleet") == ("False", "InvalidSpec"), "InvalidSpec")
    worker = controller.workers[("ClusterSimacanCredential", "", "fleet")]
    await until(lambda: worker.due_at is None, "the round over (an invalid spec waits for a change)")
    worker.due_at = -1.0
    controller.resync()  # another round: no second Event, still nothing read
    await until(lambda: worker.due_at != -1.0, "a second round")

    message = cluster.kube.statuses[("", "fleet")]["conditions"][0]["message"]
    assert "spec.credentialsSecretRef.namespace is 'team-a'" in message
    assert "must be in namespace 'platform'" in message and "--cluster-credentials-namespace" in message
    assert [(e.type, e.reason) for e in cluster.kube.events if e.name == "fleet"] == [
        ("Warning", "InvalidSpec")
    ]
    assert cluster.kube.secret_reads == [], "no Secret read at all, team-a/login least of all"
    assert cluster.kube.secret_writes == [] and cluster.fake_auth.count() == 0

    # The namespace left out means the configured one: served from platform/login.
    fixed = cluster.cluster_credential("fleet", {"matchLabels": {"team": "yes"}}, credentials_namespace=None)
    fixed["metadata"] = {**foreign["metadata"], "generation": 2}
    await controller.observe(cluster.with_status(fixed))
    await until(lambda: ready_of(cluster, "fleet") == ("True", "TokenValid"), "served")
    assert cluster.token("team-a", SECRET) and cluster.token("team-b", SECRET)
    assert ("platform", "login") in cluster.kube.secret_reads
    assert ("team-a", "login") not in cluster.kube.secret_reads


async def round_after(worker: CredentialWorker, change: Callable[[], None]) -> None:
    """Make `change` (which wakes the worker) and wait until the round it caused is over."""
    worker.due_at = -1.0  # a worker sets due_at at the end of every round
    change()
    await until(lambda: worker.due_at != -1.0, "the next round over")


async def test_a_create_whose_answer_was_lost_leaves_nothing_behind_when_deselected(cluster: Cluster) -> None:
    """The create reached the API server, the operator never saw the answer, and the namespace
    was deselected meanwhile: the Secret is still deleted, found by its owner label."""
    await served(cluster)
    controller = cluster.controller
    assert controller is not None
    cluster.kube.lost_answers = 1
    cluster.kube.on_timeout = lambda: controller.namespace_changed("other", ns())
    controller.namespace_changed("other", ns(team="yes"))
    await until(lambda: cluster.kube.lost_answers == 0, "the create sent, its answer lost")
    assert cluster.kube.secret_writes.count(("create", SECRET)) == 3, "team-a, team-b and other"

    await until(lambda: ("other", SECRET) not in cluster.kube.secrets, "the Secret gone where deselected")
    assert cluster.kube.secret_deletes == [("other", SECRET)]
    assert cluster.kube.secret_writes.count(("create", SECRET)) == 3, "never written again"


async def test_a_create_that_lands_after_its_namespace_left_is_deleted(cluster: Cluster) -> None:
    """A slow API server finishes a create after the operator gave up on it, and after the
    namespace was deselected: the watch event of that Secret (labelled as ours) gets it deleted."""
    await served(cluster)
    controller = cluster.controller
    assert controller is not None
    worker = controller.workers[("ClusterSimacanCredential", "", "shared")]
    cluster.kube.held_creates = 1
    cluster.kube.on_timeout = lambda: controller.namespace_changed("other", ns())
    controller.namespace_changed("other", ns(team="yes"))
    await until(lambda: bool(cluster.kube.held) and "other" not in worker.targets, "deselected")
    await round_after(worker, controller.resync)  # the deselection's round is over too
    assert ("other", SECRET) not in cluster.kube.secrets, "not landed yet"

    uid = worker.credential["metadata"]["uid"]
    assert concerns(worker, "other", SECRET, None) is False, "not ours: a Secret of the name, no label"
    for namespace, name in cluster.kube.land_held():
        owner = cluster.kube.secrets[(namespace, name)]["metadata"]["labels"][OWNER_LABEL]
        assert owner == uid
        version = cluster.kube.secrets[(namespace, name)]["metadata"]["resourceVersion"]
        controller.secret_changed(namespace, name, version, owner)  # as the Secret watch delivers it
    assert cluster.token("other", SECRET), "landed"
    await until(lambda: ("other", SECRET) not in cluster.kube.secrets, "the late Secret deleted")
    assert cluster.kube.secret_deletes == [("other", SECRET)]
    assert cluster.token("team-a", SECRET) and cluster.token("team-b", SECRET), "the selected keep theirs"
