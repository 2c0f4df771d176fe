"""Status writes are fenced like Secret writes, on a real API server.

A status someone else wrote (`kubectl patch --subresource=status`, a former leader's late
patch) is rewritten within seconds, for both kinds; the operator's status patch carries the
resourceVersion, so one from an outdated version gets 409 from kube-apiserver; and a status write
costs no read of the credential. Requests are counted with kube-apiserver's own
apiserver_request_total, which does not say who made them (the garbage collector GETs owners
now and then): so the operators here run as an identity with the manifests' ClusterRole minus
`get` on both credential kinds, and any GET of theirs would be counted with code 403 (and fail).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from localenv.controlplane import ControlPlane
from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import GROUP, PLURAL, VERSION, Namespace, api_client
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually, stays
from simacan_token_operator.kube.api import RawApi
from simacan_token_operator.kube.client import Kube, KubeError
from tests.conftest import SUMMARY, Issue
from tests.e2e.conftest import OPERATOR_NAMESPACE, REPO
from tests.integration.test_cluster_credential import PLURAL as CLUSTER_PLURAL
from tests.integration.test_cluster_credential import Fleet, all_served
from tests.integration.test_cluster_credential import cluster_operator as cluster_operator
from tests.integration.test_cluster_credential import fleet as fleet
from tests.support.cluster import ClusterHandle

__all__ = ["cluster_operator", "fleet"]

IDENTITY = "status-fence-test"
CREDENTIAL_KINDS = ("simacancredentials", "clustersimacancredentials")

CORRECTED_WITHIN = 5.0
FORGED = {
    "subject": "mallory",
    "conditions": [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Forged",
            "message": "written by someone else",
            "lastTransitionTime": "2020-01-01T00:00:00Z",
        }
    ],
}
Requests = Counter[tuple[str, str, str, str]]
"""apiserver_request_total by (verb, resource, subresource, code)."""


@pytest.fixture(scope="module")
def without_get(installed: ControlPlane) -> Iterator[Path]:
    """A kubeconfig of a ServiceAccount bound to the manifests' ClusterRole without `get` on
    SimacanCredentials and ClusterSimacanCredentials: an operator running as it cannot read one."""
    role = yaml.safe_load((REPO / "manifests/base/clusterrole.yaml").read_text())
    for rule in role["rules"]:
        if set(rule["resources"]) & set(CREDENTIAL_KINDS):
            rule["verbs"] = [verb for verb in rule["verbs"] if verb != "get"]
    role["metadata"] = {"name": IDENTITY}
    with installed.admin_api_client() as api:
        rbac, core = client.RbacAuthorizationV1Api(api), client.CoreV1Api(api)
        account: Any = {"metadata": {"name": IDENTITY}}
        core.create_namespaced_service_account(OPERATOR_NAMESPACE, account)
        rbac.create_cluster_role(role)
        binding: Any = {
            "metadata": {"name": IDENTITY},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": IDENTITY},
            "subjects": [{"kind": "ServiceAccount", "name": IDENTITY, "namespace": OPERATOR_NAMESPACE}],
        }
        rbac.create_cluster_role_binding(binding)
        try:
            kubeconfig = installed.kubeconfig_for_service_account(OPERATOR_NAMESPACE, IDENTITY)
            custom = client.CustomObjectsApi(api_client(kubeconfig))
            with pytest.raises(ApiException) as refused:
                custom.get_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL, "any")
            assert refused.value.status == 403, "the identity really may not get a credential"
            yield kubeconfig
        finally:
            rbac.delete_cluster_role_binding(IDENTITY)
            rbac.delete_cluster_role(IDENTITY)
            core.delete_namespaced_service_account(IDENTITY, OPERATOR_NAMESPACE)


@pytest.fixture
def cluster(cluster: ClusterHandle, without_get: Path) -> ClusterHandle:
    """The session's cluster, with operators started as the identity without `get`."""
    return dataclasses.replace(cluster, operator_kubeconfig=without_get)


def requests(admin_api: Any, resource: str) -> Requests:
    """kube-apiserver's own count of requests on `resource`, from its /metrics."""
    text = RawApi(admin_api).request("GET", "/metrics", accept="text/plain").read().decode()
    counted: Requests = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "apiserver_request_total" and labels.get("resource") == resource:
                key = (labels["verb"], resource, labels.get("subresource", ""), labels["code"])
                counted[key] += int(sample.value)
    return counted


def operator_gets(counted: Requests) -> int:
    """GETs of a credential refused for lack of `get`: only the operator lacks it."""
    return sum(n for (verb, _, _, code), n in counted.items() if verb == "GET" and code == "403")


def delta(counted: Requests, verb: str, subresource: str | None = None) -> int:
    """Requests counted with `verb` (on `subresource`, or any)."""
    return sum(n for (v, _, sub, _), n in counted.items() if v == verb and subresource in (None, sub))


def listed_status(ns: Namespace, name: str) -> tuple[str, dict[str, Any]]:
    """(resourceVersion, status) by a plain LIST: kube-apiserver counts a GET, and a LIST by
    metadata.name, as GET, which would hide the operator's."""
    listed: Any = ns.custom.list_namespaced_custom_object(GROUP, VERSION, ns.name, PLURAL)
    [item] = [i for i in listed["items"] if i["metadata"]["name"] == name]
    return item["metadata"]["resourceVersion"], item.get("status") or {}


def listed_cluster_status(fleet: Fleet) -> tuple[str, dict[str, Any]]:
    listed: Any = fleet.custom.list_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL)
    [item] = [i for i in listed["items"] if i["metadata"]["name"] == fleet.name]
    return item["metadata"]["resourceVersion"], item.get("status") or {}


def settled(read: Callable[[], tuple[str, dict[str, Any]]], what: str) -> dict[str, Any]:
    """The operator's status once complete and left alone for a second: no write still to come."""
    eventually(lambda: "staleConsumerCount" in read()[1], what=f"{what}: the status complete")
    version, status = read()
    stays(lambda: read()[0] == version, 1.0, what=f"{what}: settled")
    return status


def corrected(
    read: Callable[[], tuple[str, dict[str, Any]]],
    forge: Callable[[], dict[str, Any]],
    what: str,
    count: Callable[[], Requests],
) -> tuple[float, Requests]:
    """Forge the status once the operator's is settled; seconds until the operator's is back,
    and the requests counted from before the forgery to 2 s after the correction. `forge`
    returns the status as its patch stored it: a read after it may already see the correction."""
    written = settled(read, what)
    before = count()
    start = time.monotonic()
    assert forge() != written, "the forged status is stored"
    back = f"{what} corrected"
    eventually(lambda: read()[1] == written, timeout=CORRECTED_WITHIN, interval=0.05, what=back)
    seconds = time.monotonic() - start
    version = read()[0]
    stays(lambda: read()[0] == version, 2.0, what=f"{what}: no write after the correction")
    return seconds, count() - before


def test_a_forged_status_of_a_simacan_credential_is_rewritten_within_seconds(
    ns: Namespace, issue: Issue, admin_api: Any
) -> None:
    issue()

    def forge() -> dict[str, Any]:
        body = {"status": FORGED}
        answer: Any = ns.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns.name, PLURAL, "fleet-api", body
        )
        return answer.get("status") or {}

    read, count = (lambda: listed_status(ns, "fleet-api")), (lambda: requests(admin_api, PLURAL))
    seconds, counted = corrected(read, forge, "SimacanCredential", count)
    SUMMARY.append(f"status fence: a forged SimacanCredential status rewritten in {seconds:.2f}s")
    assert delta(counted, "PATCH", "status") == 2, f"the forged patch and one correction: {counted}"
    assert operator_gets(counted) == 0, f"the correction read no credential: {counted}"


def test_a_forged_status_of_a_cluster_credential_is_rewritten_within_seconds(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess], admin_api: Any
) -> None:
    namespaces = [fleet.namespace(), fleet.namespace()]
    fleet.create(fake_auth)
    cluster_operator()
    all_served(fleet, namespaces)

    def forge() -> dict[str, Any]:
        body = {"status": {**FORGED, "failedCount": 0, "namespaces": 9}}
        answer: Any = fleet.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, CLUSTER_PLURAL, fleet.name, body
        )
        return answer.get("status") or {}

    read, count = (lambda: listed_cluster_status(fleet)), (lambda: requests(admin_api, CLUSTER_PLURAL))
    seconds, counted = corrected(read, forge, "ClusterSimacanCredential", count)
    SUMMARY.append(f"status fence: a forged ClusterSimacanCredential status rewritten in {seconds:.2f}s")
    assert delta(counted, "PATCH", "status") == 2, f"the forged patch and one correction: {counted}"
    assert operator_gets(counted) == 0, f"the correction read no credential: {counted}"
    assert listed_cluster_status(fleet)[1]["namespaces"] == 2


def test_the_status_patch_carries_the_resource_version_and_a_stale_one_gets_409(
    ns: Namespace, issue: Issue, cluster: ClusterHandle
) -> None:
    """Through the operator's own Kube.patch_status and credentials: the precondition is sent."""
    issue()
    settled(lambda: listed_status(ns, "fleet-api"), "SimacanCredential")
    old, status = listed_status(ns, "fleet-api")
    ns.patch_credential("fleet-api", {"metadata": {"labels": {"touched": "yes"}}})  # a new version
    current, _ = listed_status(ns, "fleet-api")
    assert current != old
    api = api_client(cluster.operator_kubeconfig)
    kube = Kube(api)

    with pytest.raises(KubeError) as stale:
        asyncio.run(kube.patch_status(PLURAL, ns.name, "fleet-api", FORGED, old))
    assert stale.value.status == 409, stale.value
    assert listed_status(ns, "fleet-api")[1] == status, "the stale patch changed nothing"

    answer = asyncio.run(kube.patch_status(PLURAL, ns.name, "fleet-api", status, current))
    assert answer["metadata"]["resourceVersion"] == current, "the same status: a no-op, no new version"
    assert listed_status(ns, "fleet-api") == (current, status)


def test_a_refresh_writes_its_status_without_reading_the_credential(
    ns: Namespace, issue: Issue, admin_api: Any
) -> None:
    """The patch answer's resourceVersion fences the next patch: no GET before a status write."""
    first = issue().token
    settled(lambda: listed_status(ns, "fleet-api"), "SimacanCredential")
    before = requests(admin_api, PLURAL)
    request = "2026-12-06T10:00:00Z"
    annotations = {"auth.simacan.com/refresh-requested-at": request}
    ns.patch_credential("fleet-api", {"metadata": {"annotations": annotations}})
    eventually(
        lambda: listed_status(ns, "fleet-api")[1].get("lastRefreshRequest") == request, what="refreshed"
    )
    assert ns.secret_text("fleet-api", "token") != first
    version = listed_status(ns, "fleet-api")[0]
    stays(lambda: listed_status(ns, "fleet-api")[0] == version, 2.0, what="settled")
    counted = requests(admin_api, PLURAL) - before
    patches, gets = delta(counted, "PATCH", "status"), operator_gets(counted)
    conflicts = sum(n for key, n in counted.items() if key[3] == "409")
    SUMMARY.append(f"status fence: one refresh made {patches} status PATCH(es), {gets} credential GETs")
    assert patches == 1 and gets == 0 and conflicts == 0, counted
