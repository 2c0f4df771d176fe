"""The Kube seam: names never become paths unchecked, repeated Events fold into one, the fence holds."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from kubernetes import client

from localenv.loopback import serving
from simacan_token_operator.kube.client import (
    InvalidName,
    Kube,
    KubeError,
    NamePage,
    NotLeader,
    ObjectRef,
    checked_name,
)
from simacan_token_operator.model.clusterspec import CLUSTER_KIND, CLUSTER_PLURAL, OWNER_LABEL
from simacan_token_operator.model.spec import GROUP, PLURAL, VERSION
from tests.unit.kubeapi import api_client_for, emulated_api


@pytest.fixture
def api() -> Iterator[client.ApiClient]:
    with emulated_api() as url:
        api = api_client_for(url)
        yield api
        api.close()  # type: ignore[no-untyped-call]


def _namespace(api: client.ApiClient, name: str) -> str:
    body: Any = {"metadata": {"name": name}}
    client.CoreV1Api(api).create_namespace(body)
    return name


def _events(api: client.ApiClient, namespace: str) -> list[Any]:
    return list(client.CoreV1Api(api).list_namespaced_event(namespace).items)


REF = ObjectRef(
    "ns-a",
    "fleet-api",
    "0b5e3c5e-0000-4000-8000-000000000001",
    "auth.simacan.com/v1alpha1",
    "SimacanCredential",
)


@pytest.mark.parametrize(
    "name", ["../../other-ns/secrets/x", "a/b", "UPPER", "", "x" * 254, "-leading", "with space", "%2e%2e"]
)
def test_a_name_that_is_not_a_dns_subdomain_never_becomes_a_path(name: str) -> None:
    with pytest.raises(InvalidName) as raised:
        checked_name("Secret", name)
    assert isinstance(raised.value, KubeError) and isinstance(raised.value, ValueError)
    assert raised.value.status == 422


def test_valid_names_pass_unchanged() -> None:
    assert checked_name("Secret", "fleet-api.token-1") == "fleet-api.token-1"


class _Recorder(http.server.BaseHTTPRequestHandler):
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.paths.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_traversal_name_from_a_spec_reaches_no_server() -> None:
    with serving(_Recorder) as url:
        kube = Kube(api_client_for(url))
        with pytest.raises(InvalidName):
            asyncio.run(kube.read_secret("team-a", "../../other-ns/secrets/x"))
        assert asyncio.run(kube.read_secret("team-a", "fine")) is None  # the server does get valid names
        assert _Recorder.paths == ["/api/v1/namespaces/team-a/secrets/fine"]


def test_repeated_events_increase_the_count_of_one_event(api: client.ApiClient) -> None:
    namespace = _namespace(api, "ns-a")
    kube = Kube(api)

    async def post(reason: str, message: str) -> None:
        await kube.post_event(REF, "Warning", reason, message)

    async def scenario() -> None:
        for _ in range(3):
            await post("AuthUnavailable", "the Auth API answered HTTP 503")
        await post("AuthUnavailable", "the Auth API timed out")  # another message: another Event
        await post("InvalidCredentials", "the Auth API answered HTTP 401")

    asyncio.run(scenario())
    events = _events(api, namespace)
    counts = sorted((e.reason, e.message, e.count) for e in events)
    assert counts == [
        ("AuthUnavailable", "the Auth API answered HTTP 503", 3),
        ("AuthUnavailable", "the Auth API timed out", 1),
        ("InvalidCredentials", "the Auth API answered HTTP 401", 1),
    ]
    repeated = next(e for e in events if e.count == 3)
    assert repeated.last_timestamp >= repeated.first_timestamp


def test_an_event_deleted_on_the_server_is_posted_afresh(api: client.ApiClient) -> None:
    namespace = _namespace(api, "ns-a")
    kube = Kube(api)
    asyncio.run(kube.post_event(REF, "Warning", "AuthUnavailable", "down"))
    (first,) = _events(api, namespace)
    client.CoreV1Api(api).delete_namespaced_event(first.metadata.name, namespace)  # as the event TTL does
    asyncio.run(kube.post_event(REF, "Warning", "AuthUnavailable", "down"))
    (second,) = _events(api, namespace)
    assert second.metadata.name != first.metadata.name and second.count == 1


class _Closed:
    def write_budget(self) -> float | None:
        return None

    def track(self, write: asyncio.Future[Any]) -> None:
        raise AssertionError("a refused write is never sent")


def test_a_replica_that_is_not_the_leader_writes_nothing(api: client.ApiClient) -> None:
    namespace = _namespace(api, "ns-a")
    kube = Kube(api, fence=_Closed())
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "fleet-api"}, "type": "Opaque"}
    with pytest.raises(NotLeader):
        asyncio.run(kube.create_secret(namespace, secret))
    with pytest.raises(NotLeader):
        asyncio.run(kube.post_event(REF, "Normal", "Issued", "first token"))
    assert asyncio.run(kube.read_secret(namespace, "fleet-api")) is None  # reads still work
    assert _events(api, namespace) == []


def test_a_replace_without_resource_version_is_refused_before_sending(api: client.ApiClient) -> None:
    namespace = _namespace(api, "ns-a")
    kube = Kube(api)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "fleet-api"}, "type": "Opaque"}
    asyncio.run(kube.create_secret(namespace, secret))
    with pytest.raises(ValueError, match="resourceVersion"):
        asyncio.run(kube.replace_secret(namespace, secret))


def test_both_kinds_status_patches_reach_their_status_subresource(api: client.ApiClient) -> None:
    namespace = _namespace(api, "ns-a")
    custom = client.CustomObjectsApi(api)
    body: Any = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SimacanCredential",
        "metadata": {"name": "fleet-api"},
    }
    created: Any = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": CLUSTER_KIND, "metadata": {"name": "fleet-wide"}}
    created_cluster: Any = custom.create_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL, body)
    kube = Kube(api)

    async def patch() -> tuple[Any, Any]:
        version = created["metadata"]["resourceVersion"]
        one = await kube.patch_status(PLURAL, namespace, "fleet-api", {"phase": "namespaced"}, version)
        version = created_cluster["metadata"]["resourceVersion"]
        two = await kube.patch_status(CLUSTER_PLURAL, "", "fleet-wide", {"phase": "cluster"}, version)
        return one, two

    answers = asyncio.run(patch())
    namespaced: Any = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fleet-api")
    cluster: Any = custom.get_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL, "fleet-wide")
    assert namespaced["status"] == {"phase": "namespaced"} and cluster["status"] == {"phase": "cluster"}
    assert [a["metadata"]["resourceVersion"] for a in answers] == [
        namespaced["metadata"]["resourceVersion"],
        cluster["metadata"]["resourceVersion"],
    ], "the answer is the object as stored: its version fences the next patch"
    with pytest.raises(InvalidName, match="clustersimacancredentials"):
        asyncio.run(kube.patch_status(CLUSTER_PLURAL, "", "../fleet-wide", {"phase": "x"}, "1"))
    with pytest.raises(KubeError) as missing:
        asyncio.run(kube.patch_status(CLUSTER_PLURAL, "", "absent", {"phase": "x"}, "1"))
    assert missing.value.status == 404 and "clustersimacancredentials absent" in str(missing.value)


def test_a_status_patch_from_an_outdated_version_gets_409_and_changes_nothing(api: client.ApiClient) -> None:
    namespace = _namespace(api, "ns-a")
    custom = client.CustomObjectsApi(api)
    body: Any = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SimacanCredential", "metadata": {"name": "x"}}
    created: Any = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    old = created["metadata"]
    kube = Kube(api)
    asyncio.run(kube.patch_status(PLURAL, namespace, "x", {"phase": "new"}, old["resourceVersion"]))
    with pytest.raises(KubeError) as stale:
        asyncio.run(kube.patch_status(PLURAL, namespace, "x", {"phase": "late"}, old["resourceVersion"]))
    assert stale.value.status == 409
    stored: Any = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "x")
    assert stored["status"] == {"phase": "new"}
    with pytest.raises(ValueError, match="resourceVersion"):
        asyncio.run(kube.patch_status(PLURAL, namespace, "x", {"phase": "unfenced"}, ""))


def test_a_delete_removes_only_the_secret_read(api: client.ApiClient) -> None:
    namespace = _namespace(api, "ns-a")
    kube = Kube(api)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "fleet-api"}, "type": "Opaque"}
    uid = asyncio.run(kube.create_secret(namespace, secret))["metadata"]["uid"]
    asyncio.run(kube.delete_secret(namespace, "fleet-api", "another-uid"))  # replaced meanwhile: 409, kept
    assert asyncio.run(kube.read_secret(namespace, "fleet-api")) is not None
    asyncio.run(kube.delete_secret(namespace, "fleet-api", uid))
    assert asyncio.run(kube.read_secret(namespace, "fleet-api")) is None
    asyncio.run(kube.delete_secret(namespace, "fleet-api", uid))  # gone already: 404, fine
    with pytest.raises(NotLeader):
        asyncio.run(Kube(api, fence=_Closed()).delete_secret(namespace, "fleet-api", uid))


def test_namespaces_holding_lists_the_secrets_of_one_owner(api: client.ApiClient) -> None:
    kube = Kube(api)
    for namespace, owner in (("ns-a", "uid-1"), ("ns-b", "uid-1"), ("ns-c", "uid-2")):
        _namespace(api, namespace)
        labels = {OWNER_LABEL: owner}
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "t", "labels": labels},
            "type": "Opaque",
        }
        asyncio.run(kube.create_secret(namespace, secret))
    assert asyncio.run(kube.namespaces_holding("uid-1")) == {"ns-a", "ns-b"}
    assert asyncio.run(kube.namespaces_holding("uid-3")) == set()


def test_list_names_pages_through_a_scope_keeping_names_only(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    noise = {"note": "x" * 4096}  # a tenant's annotations: parsed, never kept
    for namespace, name in (("ns-a", "one"), ("ns-a", "two"), ("ns-a", "three"), ("ns-b", "four")):
        if name in ("one", "four"):
            _namespace(api, namespace)
        body: Any = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SimacanCredential"}
        body["metadata"] = {"name": name, "annotations": noise}
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": CLUSTER_KIND, "metadata": {"name": "fleet-wide"}}
    custom.create_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL, body)
    kube = Kube(api)

    async def every_page(plural: str, namespace: str | None) -> list[NamePage]:
        pages = [await kube.list_names(plural, namespace, 2, None)]
        while pages[-1].continue_token is not None:
            pages.append(await kube.list_names(plural, namespace, 2, pages[-1].continue_token))
        return pages

    async def listed() -> tuple[list[NamePage], list[NamePage], list[NamePage]]:
        async with contextlib.aclosing(kube):
            in_a = await every_page(PLURAL, "ns-a")
            everywhere = await every_page(PLURAL, None)
            cluster_scoped = await every_page(CLUSTER_PLURAL, None)
            with pytest.raises(InvalidName):
                await kube.list_names(PLURAL, "../ns-b", 2, None)
        return in_a, everywhere, cluster_scoped

    in_a, everywhere, cluster_scoped = asyncio.run(listed())
    assert [len(page.names) for page in in_a] == [2, 1], "pages of the limit asked for"
    assert {name for page in in_a for name in page.names} == {
        ("ns-a", "one"),
        ("ns-a", "two"),
        ("ns-a", "three"),
    }
    assert {name for page in everywhere for name in page.names} == {
        ("ns-a", "one"),
        ("ns-a", "two"),
        ("ns-a", "three"),
        ("ns-b", "four"),
    }
    assert [page.names for page in cluster_scoped] == [(("", "fleet-wide"),)]
