"""Status writes are fenced like Secret writes, on a real API server.

A status someone else wrote (`kubectl patch --subresource=status`, a former leader's late
patch) is rewritten within seconds, for both kinds; the operator's status patch carries the
resourceVersion, so one from an outdated version gets 409 from kube-apiserver; and a status write
costs no read of the credential. Requests are counted with kube-apiserver's own
apiserver_request_total; this module's reads are LISTs, so every GET counted is the operator's.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from localenv.auth_standin import FakeAuthAPI
from simacan_token_operator.kube.api import RawApi
from simacan_token_operator.kube.client import Kube, KubeError
from tests.conftest import SUMMARY, Issue
from tests.integration.test_cluster_credential import PLURAL as CLUSTER_PLURAL
from tests.integration.test_cluster_credential import Fleet, all_served
from tests.integration.test_cluster_credential import cluster_operator as cluster_operator
from tests.integration.test_cluster_credential import fleet as fleet
from tests.support.cluster import ClusterHandle
from tests.support.k8s import GROUP, PLURAL, VERSION, Namespace, api_client
from tests.support.operator_process import OperatorProcess
from tests.support.polling import eventually, stays

__all__ = ["cluster_operator", "fleet"]

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


def delta(after: Requests, before: Requests, verb: str, subresource: str | None = None) -> int:
    return sum(
        count - before.get(key, 0)
        for key, count in after.items()
        if key[0] == verb and (subresource is None or key[2] == subresource)
    )


def listed_status(ns: Namespace, name: str) -> tuple[str, dict[str, Any]]:
    """(resourceVersion, status) by a LIST: a GET here would be counted as the operator's."""
    listed: Any = ns.custom.list_namespaced_custom_object(
        GROUP, VERSION, ns.name, PLURAL, field_selector=f"metadata.name={name}"
    )
    [item] = listed["items"]
    return item["metadata"]["resourceVersion"], item.get("status") or {}


def listed_cluster_status(fleet: Fleet) -> tuple[str, dict[str, Any]]:
    listed: Any = fleet.custom.list_cluster_custom_object(
        GROUP, VERSION, CLUSTER_PLURAL, field_selector=f"metadata.name={fleet.name}"
    )
    [item] = listed["items"]
    return item["metadata"]["resourceVersion"], item.get("status") or {}


def corrected(
    read: Callable[[], tuple[str, dict[str, Any]]], forge: Callable[[], None], what: str
) -> tuple[float, str]:
    """Forge the status once the operator's is settled; seconds until the operator's is back,
    and the resourceVersion after the correction."""
    eventually(lambda: "staleConsumerCount" in read()[1], what=f"{what}: the status complete")
    written = read()[1]
    start = time.monotonic()
    forge()
    assert read()[1] != written, "the forged status is stored"
    eventually(
        lambda: read()[1] == written, timeout=CORRECTED_WITHIN, interval=0.05, what=f"{what} corrected"
    )
    seconds = time.monotonic() - start
    version = read()[0]
    stays(lambda: read()[0] == version, 2.0, what=f"{what}: no write after the correction")
    return seconds, version


def test_a_forged_status_of_a_simacan_credential_is_rewritten_within_seconds(
    ns: Namespace, issue: Issue, admin_api: Any
) -> None:
    issue()
    before = requests(admin_api, PLURAL)

    def forge() -> None:
        body = {"status": FORGED}
        ns.custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns.name, PLURAL, "fleet-api", body)

    seconds, _ = corrected(lambda: listed_status(ns, "fleet-api"), forge, "SimacanCredential")
    after = requests(admin_api, PLURAL)
    patches = delta(after, before, "PATCH", "status")
    SUMMARY.append(f"status fence: a forged SimacanCredential status rewritten in {seconds:.2f}s")
    assert patches == 2, f"the forged patch and one correction: {patches} status PATCHes"
    assert delta(after, before, "GET") == 0, "the correction read no credential"


def test_a_forged_status_of_a_cluster_credential_is_rewritten_within_seconds(
    fleet: Fleet, auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess], admin_api: Any
) -> None:
    namespaces = [fleet.namespace(), fleet.namespace()]
    fleet.create(auth)
    cluster_operator()
    all_served(fleet, namespaces)
    before = requests(admin_api, CLUSTER_PLURAL)

    def forge() -> None:
        body = {"status": {**FORGED, "failedCount": 0, "namespaces": 9}}
        fleet.custom.patch_cluster_custom_object_status(GROUP, VERSION, CLUSTER_PLURAL, fleet.name, body)

    seconds, _ = corrected(lambda: listed_cluster_status(fleet), forge, "ClusterSimacanCredential")
    after = requests(admin_api, CLUSTER_PLURAL)
    patches = delta(after, before, "PATCH", "status")
    SUMMARY.append(f"status fence: a forged ClusterSimacanCredential status rewritten in {seconds:.2f}s")
    assert patches == 2, f"the forged patch and one correction: {patches} status PATCHes"
    assert delta(after, before, "GET") == 0, "the correction read no credential"
    assert fleet.status()["namespaces"] == 2


def test_the_status_patch_carries_the_resource_version_and_a_stale_one_gets_409(
    ns: Namespace, issue: Issue, cluster: ClusterHandle
) -> None:
    """Through the operator's own Kube.patch_status and credentials: the precondition is sent."""
    issue()
    eventually(lambda: "staleConsumerCount" in listed_status(ns, "fleet-api")[1], what="status complete")
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
    eventually(lambda: "staleConsumerCount" in listed_status(ns, "fleet-api")[1], what="status complete")
    time.sleep(1)  # the second round that the first token's Secret write woke is over
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
    after = requests(admin_api, PLURAL)
    patches, gets = delta(after, before, "PATCH", "status"), delta(after, before, "GET")
    conflicts = sum(n - before.get(k, 0) for k, n in after.items() if k[3] == "409")
    SUMMARY.append(
        f"status fence: one refresh made {patches} status PATCH(es), {gets} GETs of the credential"
    )
    assert patches == 1 and gets == 0 and conflicts == 0, after - before
