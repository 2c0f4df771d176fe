"""simacan_kube_requests_total: every request the operator's client sends, by the verb and resource
kube-apiserver's audit log would name and the answer's status. Real calls to the emulator."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from localenv.polling import eventually
from simacan_token_operator.app.metrics import Metrics
from simacan_token_operator.kube.client import Kube, KubeError
from simacan_token_operator.kube.leader import LeaderElector, LeaseTimings
from simacan_token_operator.kube.metered import MeteredApiClient, request_labels
from simacan_token_operator.kube.secretwatch import secret_watch
from simacan_token_operator.model.clusterspec import CLUSTER_KIND, CLUSTER_PLURAL
from simacan_token_operator.model.spec import GROUP, PLURAL, VERSION
from tests.unit.kubeapi import api_client_for, emulated_api

NS = "/api/v1/namespaces/team-a"
CRS = f"/apis/{GROUP}/{VERSION}"


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", f"{NS}/secrets/fleet-api", ("get", "secrets")),
        ("GET", f"{NS}/secrets?limit=1", ("list", "secrets")),
        ("GET", "/api/v1/secrets?watch=true&resourceVersion=5", ("watch", "secrets")),
        ("POST", f"{NS}/secrets", ("create", "secrets")),
        ("PUT", f"{NS}/secrets/fleet-api", ("update", "secrets")),
        ("DELETE", f"{NS}/secrets/fleet-api", ("delete", "secrets")),
        ("DELETE", f"{NS}/secrets", ("deletecollection", "secrets")),
        ("PATCH", f"{CRS}/namespaces/team-a/{PLURAL}/fleet-api/status", ("patch", f"{PLURAL}/status")),
        ("GET", f"{CRS}/namespaces/team-a/{PLURAL}", ("list", PLURAL)),
        ("PATCH", f"{CRS}/{CLUSTER_PLURAL}/fleet-wide/status", ("patch", f"{CLUSTER_PLURAL}/status")),
        ("GET", f"{CRS}/{CLUSTER_PLURAL}/fleet-wide", ("get", CLUSTER_PLURAL)),
        ("POST", f"{NS}/events", ("create", "events")),
        ("PATCH", f"{NS}/events/x.1", ("patch", "events")),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ops/leases/op", ("update", "leases")),
        ("GET", "/apis/apps/v1/namespaces/team-a/deployments?limit=50", ("list", "deployments")),
        ("PATCH", "/apis/apps/v1/namespaces/team-a/statefulsets/db", ("patch", "statefulsets")),
        ("GET", "/apis/apps/v1/namespaces/team-a/daemonsets/agent", ("get", "daemonsets")),
        ("GET", "/api/v1/namespaces?watch=1", ("watch", "namespaces")),
        ("GET", "/api/v1/namespaces/team-a", ("get", "namespaces")),
        ("GET", "/api/v1/namespaces/team-a/status", ("get", "namespaces/status")),
        ("GET", f"{NS}/pods/web-0/log", ("get", "other")),
        ("GET", f"{NS}/configmaps/settings", ("get", "other")),
        ("GET", "/version", ("get", "other")),
    ],
)
def test_a_request_is_labelled_as_the_api_server_names_it(
    method: str, path: str, expected: tuple[str, str]
) -> None:
    assert request_labels(method, f"https://10.0.0.1:6443{path}") == expected


def test_a_path_prefix_of_the_configured_host_is_not_part_of_the_resource() -> None:
    url = "https://rancher.example/k8s/clusters/c-1/api/v1/namespaces/team-a/secrets/x"
    assert request_labels("GET", url, "/k8s/clusters/c-1") == ("get", "secrets")


@pytest.fixture
def emulated() -> Iterator[str]:
    with emulated_api() as url:
        yield url


def _metered(url: str, metrics: Metrics) -> client.ApiClient:
    return MeteredApiClient(api_client_for(url).configuration, metrics.count_kube_request)


def _counted(metrics: Metrics) -> dict[tuple[str, str, str], float]:
    (family,) = (f for f in metrics.registry.collect() if f.name == "simacan_kube_requests")
    return {
        (s.labels["verb"], s.labels["resource"], s.labels["code"]): s.value
        for s in family.samples
        if s.name.endswith("_total")
    }


def test_the_operators_calls_are_counted_by_verb_resource_and_code(emulated: str) -> None:
    admin = api_client_for(emulated)
    body: Any = {"metadata": {"name": "team-a"}}
    client.CoreV1Api(admin).create_namespace(body)
    custom = client.CustomObjectsApi(admin)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SimacanCredential", "metadata": {"name": "c"}}
    made: Any = custom.create_namespaced_custom_object(GROUP, VERSION, "team-a", PLURAL, body)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": CLUSTER_KIND, "metadata": {"name": "fleet-wide"}}
    made_cluster: Any = custom.create_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL, body)
    versions = [str(made["metadata"]["resourceVersion"]), str(made_cluster["metadata"]["resourceVersion"])]
    metrics = Metrics()
    api = _metered(emulated, metrics)
    kube = Kube(api)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "fleet-api"}, "type": "Opaque"}

    async def calls() -> None:
        assert await kube.read_secret("team-a", "fleet-api") is None
        await kube.create_secret("team-a", secret)
        with pytest.raises(KubeError):
            await kube.create_secret("team-a", secret)  # 409: exists
        await kube.patch_status(PLURAL, "team-a", "c", {"phase": "x"}, versions[0])
        await kube.patch_status(CLUSTER_PLURAL, "", "fleet-wide", {"phase": "x"}, versions[1])
        await kube.list_workload_stamps("team-a", "Deployment", 10, None)
        elector = LeaderElector(api, "default", "metered", "me", LeaseTimings(3.0, 2.0, 0.3))
        await elector.acquire()  # a GET (404) and a create
        watch = secret_watch(api, ["team-a"], lambda *_: None, lambda *_: None)
        watch.start()
        await asyncio.to_thread(eventually, lambda: ("watch", "secrets", "200") in _counted(metrics))
        await watch.stop()

    asyncio.run(calls())
    counted = _counted(metrics)
    expected = {
        ("get", "secrets", "404"): 1,
        ("create", "secrets", "201"): 1,
        ("create", "secrets", "409"): 1,
        ("patch", f"{PLURAL}/status", "200"): 1,
        ("patch", f"{CLUSTER_PLURAL}/status", "200"): 1,
        ("list", "deployments", "200"): 1,
        ("get", "leases", "404"): 1,
        ("create", "leases", "201"): 1,
        ("list", "secrets", "200"): 1,
    }
    assert {key: counted.get(key) for key in expected} == expected
    assert counted.get(("watch", "secrets", "200"), 0) >= 1
    assert set(counted) <= {*expected, ("watch", "secrets", "200")}, "nothing else was sent"


def test_a_request_that_gets_no_answer_is_counted_as_an_error() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: connections are refused
        metrics = Metrics()
        kube = Kube(_metered(f"http://127.0.0.1:{port}", metrics))
        with pytest.raises(KubeError) as raised:
            asyncio.run(kube.read_secret("team-a", "fleet-api"))
    assert raised.value.status == 0
    assert _counted(metrics) == {("get", "secrets", "error"): 1}
