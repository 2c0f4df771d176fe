"""The stale-consumer check on a real API server holds verdicts, not workloads (issue 19).

kube-apiserver pages a metadata-only list (`limit`, `continue`, PartialObjectMetadataList) for
the operator's own ServiceAccount; the operator follows the pages to a stale consumer on the last
one, reads in full only the workloads whose generation is new, and its memory does not follow the
size of the tenant's workloads.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client

from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import Namespace, api_client
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually
from simacan_token_operator.controller.workloads import PAGE_SIZE
from simacan_token_operator.kube.client import METADATA_LIST, Kube, RawApi, WorkloadStamp
from simacan_token_operator.reconcile.consumers import TEMPLATE_FIELDS
from tests.conftest import SUMMARY, Issue, credential_spec
from tests.support.cluster import ClusterHandle

SECRET = "fleet-api"
READS_TOKEN: dict[str, Any] = {
    "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "token"}}}]
}


def deployment(name: str, annotations: dict[str, str] | None = None, **container: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "busybox", **container}]},
            },
        },
    }


def create_all(cluster: ClusterHandle, namespace: str, bodies: Iterable[dict[str, Any]]) -> None:
    """In parallel: the point is the operator, not how fast one client creates objects."""
    api = api_client(cluster.kubeconfig, pool_size=8)
    apps = client.AppsV1Api(api)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda body: apps.create_namespaced_deployment(namespace, body), bodies))
    api.close()  # type: ignore[no-untyped-call]


def set_container(ns: Namespace, name: str, **container: Any) -> None:
    """A pod-template change (strategic merge patch, containers merged by name): a new generation."""
    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "busybox", **container}]}}}
    }
    client.AppsV1Api(ns.api).patch_namespaced_deployment(name, ns.name, patch)


def stale_consumers(ns: Namespace) -> list[str] | None:
    status = ns.credential(SECRET).get("status") or {}
    stale = status.get("staleConsumers")
    return stale if isinstance(stale, list) else None


def surveys(operator: OperatorProcess, namespace: str) -> list[tuple[int, int, int]]:
    """(listed, pages, read in full) of each survey of the namespace the operator logged."""
    pattern = (
        rf"surveyed workloads in {namespace}: (\d+) listed in (\d+) pages of up to \d+, (\d+) read in full"
    )
    return [(int(a), int(b), int(c)) for a, b, c in re.findall(pattern, operator.logs())]


def test_the_operators_account_pages_workloads_metadata_only(ns: Namespace, cluster: ClusterHandle) -> None:
    names = [f"d-{i:02}" for i in range(12)]
    bulky = {"bulk": "a" * 100_000}
    create_all(
        cluster, ns.name, [deployment(n, bulky, env=[{"name": "V", "value": "v" * 100_000}]) for n in names]
    )
    operator_api = api_client(cluster.operator_kubeconfig)
    kube = Kube(operator_api)

    async def all_pages(limit: int) -> list[tuple[WorkloadStamp, ...]]:
        pages, token = [], None
        while True:
            page = await kube.list_workload_stamps(ns.name, "Deployment", limit, token)
            pages.append(page.stamps)
            token = page.continue_token
            if token is None:
                return pages

    pages = asyncio.run(all_pages(5))
    assert [len(page) for page in pages] == [5, 5, 2]
    stamps = [stamp for page in pages for stamp in page]
    assert [s.name for s in stamps] == names
    assert len({s.uid for s in stamps}) == 12 and {s.generation for s in stamps} == {1}

    raw = RawApi(operator_api).json(
        "GET", f"/apis/apps/v1/namespaces/{ns.name}/deployments", query={"limit": 5}, accept=METADATA_LIST
    )
    assert raw["kind"] == "PartialObjectMetadataList" and raw["metadata"]["continue"]
    assert all(set(item) <= {"kind", "apiVersion", "metadata"} for item in raw["items"]), (
        "no spec in the list"
    )

    set_container(ns, "d-03", **READS_TOKEN)
    changed = {s.name: s.generation for page in asyncio.run(all_pages(PAGE_SIZE)) for s in page}
    assert changed["d-03"] == 2 and changed["d-04"] == 1

    body = asyncio.run(kube.read_workload_fields(ns.name, "Deployment", "d-03", TEMPLATE_FIELDS))
    assert body is not None
    assert set(body) == {"metadata", "spec"}
    assert set(body["metadata"]) <= {"name", "uid", "generation", "resourceVersion"}
    assert "busybox" not in repr(body) and "bulk" not in repr(body)
    operator_api.close()  # type: ignore[no-untyped-call]


def test_a_stale_consumer_on_the_last_page_is_found_and_a_changed_workload_is_read_again(
    ns: Namespace, cluster: ClusterHandle, fake_auth: FakeAuthAPI, issue: Issue
) -> None:
    count = 2 * PAGE_SIZE + 5
    bodies = [deployment(f"app-{i:02}") for i in range(count - 2)]
    bodies += [deployment("m-changes"), deployment("zz-env-reader", **READS_TOKEN)]  # the last by name
    create_all(cluster, ns.name, bodies)
    fake_auth.access_lifetime = 20  # a pass every few seconds: a survey is due again a minute later
    operator = issue().operator

    eventually(lambda: stale_consumers(ns) == ["Deployment/zz-env-reader"], timeout=30, what="the stale one")
    assert ns.credential(SECRET)["status"]["staleConsumerCount"] == 1
    first = surveys(operator, ns.name)[0]
    assert first == (count, 5, count), "3 pages of Deployments, one each of StatefulSets and DaemonSets"

    set_container(ns, "m-changes", envFrom=[{"secretRef": {"name": SECRET}}])
    set_container(ns, "zz-env-reader", env=None)  # null: a strategic merge patch drops the field
    started = time.monotonic()
    eventually(lambda: stale_consumers(ns) == ["Deployment/m-changes"], timeout=100, what="the new verdicts")
    SUMMARY.append(f"e2e: changed workloads re-judged {time.monotonic() - started:.0f}s after the change")
    later = surveys(operator, ns.name)[1:]
    assert all(listed == count for listed, _, _ in later)
    assert sum(read for _, _, read in later) == 2, f"only the two changed ones are read again: {later}"


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1])


def test_sixty_deployments_of_a_mebibyte_leave_the_operators_memory_flat(
    ns: Namespace, cluster: ClusterHandle, fake_auth: FakeAuthAPI, issue: Issue
) -> None:
    operator = issue().operator
    assert operator.process is not None
    pid = operator.process.pid
    eventually(lambda: surveys(operator, ns.name) == [(0, 3, 0)], timeout=30, what="the first, empty survey")
    with open(f"/proc/{pid}/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current RSS
    before = vm_hwm_kib(pid)

    # ~1 MiB each: 200 KB of annotations (in every page of the metadata list) and 800 KB of env.
    bulk = {"bulk": "a" * 200_000}
    big = [{"name": f"V{i}", "value": str(i) * 200_000} for i in range(4)]
    create_all(cluster, ns.name, [deployment(f"big-{i:02}", bulk, env=big) for i in range(59)])
    create_all(cluster, ns.name, [deployment("big-zz", bulk, env=[*big, *READS_TOKEN["env"]])])
    # A new credential in place of the old: the namespace's verdicts go with the old one, and the
    # new one's first pass surveys the namespace afresh (no waiting a minute for the next survey).
    ns.delete_credential(SECRET)  # no finalizer: gone at once
    ns.create_credential(SECRET, credential_spec(fake_auth))
    eventually(lambda: stale_consumers(ns) == ["Deployment/big-zz"], timeout=120, what="the survey of 60")
    grown_mib = (vm_hwm_kib(pid) - before) / 1024
    SUMMARY.append(f"e2e: 60 Deployments of ~1 MiB: operator peak RSS grew {grown_mib:.1f} MiB")
    assert (60, 8, 60) in surveys(operator, ns.name)
    assert grown_mib < 16, f"peak RSS grew {grown_mib:.1f} MiB"
