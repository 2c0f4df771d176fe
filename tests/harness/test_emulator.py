"""The fast tier's Kubernetes emulator behaves like kube-apiserver for the kubernetes client and for kopf."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import pytest

from simacan_token_operator.kube.client import METADATA_LIST, RawApi
from tests.support.cluster import ClusterHandle
from tests.support.emulator import ApiServerEmulator, ObjectStore, running_emulator, serving, write_kubeconfig

GROUP, VERSION, PLURAL = "auth.simacan.com", "v1alpha1", "simacancredentials"
NS = "default"
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], *, timeout: float = 15.0, what: str) -> T:
    """Poll until the probe returns something, or fail after the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result is not None:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterHandle]:
    with running_emulator(tmp_path) as handle:
        yield handle


@contextlib.contextmanager
def kube_client(kubeconfig: Path) -> Iterator[kubernetes.client.ApiClient]:
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    try:
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]


def watch_events(list_call: Callable[..., Any], *args: Any, **kwargs: Any) -> Generator[dict[str, Any]]:
    stream: Generator[dict[str, Any]] = kubernetes.watch.Watch().stream(  # type: ignore[no-untyped-call]
        list_call, *args, **kwargs
    )
    return stream


@pytest.fixture
def api(cluster: ClusterHandle) -> Iterator[kubernetes.client.ApiClient]:
    with kube_client(cluster.kubeconfig) as client:
        yield client


# The client's stubs ask for model objects where the API takes plain JSON; these tests speak plain JSON.
@pytest.fixture
def core(api: kubernetes.client.ApiClient) -> Any:
    return kubernetes.client.CoreV1Api(api)


@pytest.fixture
def custom(api: kubernetes.client.ApiClient) -> Any:
    return kubernetes.client.CustomObjectsApi(api)


def credential(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SimacanCredential",
        "metadata": {"name": name},
        "spec": spec or {"username": "bot@example.com"},
    }


def api_error(call: Callable[[], object]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(kubernetes.client.ApiException) as info:
        call()
    return info.value.status, json.loads(info.value.body or "{}")


def get_json(server: str, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(server + path, timeout=5) as response:
        result: dict[str, Any] = json.load(response)
        return result


def test_discovery_serves_the_operator_resources(cluster: ClusterHandle) -> None:
    core_resources = {r["name"]: r for r in get_json(cluster.server, "/api/v1")["resources"]}
    assert get_json(cluster.server, "/api/v1")["groupVersion"] == "v1"
    assert {"secrets", "events", "configmaps", "namespaces"} <= set(core_resources)
    assert core_resources["secrets"]["namespaced"] and not core_resources["namespaces"]["namespaced"]
    groups = {g["name"] for g in get_json(cluster.server, "/apis")["groups"]}
    assert {GROUP, "events.k8s.io", "coordination.k8s.io"} <= groups
    ours = {r["name"]: r for r in get_json(cluster.server, f"/apis/{GROUP}/{VERSION}")["resources"]}
    assert ours[PLURAL]["kind"] == "SimacanCredential" and ours[PLURAL]["namespaced"] is True
    assert f"{PLURAL}/status" in ours
    assert {"list", "watch", "patch", "update"} <= set(ours[PLURAL]["verbs"])
    leases = get_json(cluster.server, "/apis/coordination.k8s.io/v1")["resources"]
    assert [r["name"] for r in leases] == ["leases"]


def test_create_sets_server_metadata_and_get_returns_it(core: Any) -> None:
    first = core.create_namespaced_secret(NS, {"metadata": {"name": "one"}, "data": {"k": "dg=="}})
    second = core.create_namespaced_secret(NS, {"metadata": {"name": "two"}})
    assert first.metadata.uid and first.metadata.uid != second.metadata.uid
    assert first.metadata.creation_timestamp is not None and first.metadata.namespace == NS
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    assert first.type == "Opaque"
    fetched = core.read_namespaced_secret("one", NS)
    assert fetched.metadata.resource_version == first.metadata.resource_version
    assert fetched.data == {"k": "dg=="}


def test_create_of_existing_name_is_409_already_exists(core: Any) -> None:
    core.create_namespaced_secret(NS, {"metadata": {"name": "dup"}})
    status, body = api_error(lambda: core.create_namespaced_secret(NS, {"metadata": {"name": "dup"}}))
    assert (status, body["kind"], body["reason"], body["code"]) == (409, "Status", "AlreadyExists", 409)


def test_missing_objects_and_namespaces_are_404_not_found(core: Any) -> None:
    status, body = api_error(lambda: core.read_namespaced_secret("absent", NS))
    assert (status, body["reason"]) == (404, "NotFound")
    status, body = api_error(lambda: core.create_namespaced_secret("no-such-ns", {"metadata": {"name": "x"}}))
    assert (status, body["reason"]) == (404, "NotFound")


def test_generate_name_gives_distinct_names_with_the_prefix(core: Any) -> None:
    made = [
        core.create_namespaced_event(
            NS, {"metadata": {"generateName": "evt-"}, "involvedObject": {"kind": "Secret", "name": "x"}}
        )
        for _ in range(3)
    ]
    names = {event.metadata.name for event in made}
    assert len(names) == 3 and all(name.startswith("evt-") and len(name) > 4 for name in names)


def test_replace_with_stale_resource_version_is_409_conflict(core: Any) -> None:
    original = core.create_namespaced_secret(NS, {"metadata": {"name": "s"}, "stringData": {"a": "1"}})
    original.string_data = {"a": "2"}
    replaced = core.replace_namespaced_secret("s", NS, original)
    assert int(replaced.metadata.resource_version) > int(original.metadata.resource_version)
    assert base64.b64decode(replaced.data["a"]) == b"2"
    original.string_data = {"a": "3"}  # still carries the old resourceVersion
    status, body = api_error(lambda: core.replace_namespaced_secret("s", NS, original))
    assert (status, body["reason"]) == (409, "Conflict")
    assert base64.b64decode(core.read_namespaced_secret("s", NS).data["a"]) == b"2"


def test_string_data_is_folded_into_base64_data(core: Any) -> None:
    created = core.create_namespaced_secret(
        NS, {"metadata": {"name": "s"}, "data": {"keep": "a2VlcA=="}, "stringData": {"token": "abc"}}
    )
    assert created.data == {"keep": "a2VlcA==", "token": base64.b64encode(b"abc").decode()}
    assert created.string_data is None
    patched = core.patch_namespaced_secret("s", NS, {"stringData": {"token": "xyz"}})
    assert patched.data == {"keep": "a2VlcA==", "token": base64.b64encode(b"xyz").decode()}


def test_patches_merge_apply_json_patch_and_check_its_tests(core: Any) -> None:
    core.create_namespaced_config_map(
        NS, {"metadata": {"name": "cm", "labels": {"a": "1", "b": "2"}}, "data": {"x": "1"}}
    )
    merged = core.patch_namespaced_config_map("cm", NS, {"metadata": {"labels": {"a": None, "c": "3"}}})
    assert merged.metadata.labels == {"b": "2", "c": "3"} and merged.data == {"x": "1"}
    rv = merged.metadata.resource_version
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/data/y", "value": "2"},
        {"op": "remove", "path": "/data/x"},
    ]
    assert core.patch_namespaced_config_map("cm", NS, ops).data == {"y": "2"}
    status, body = api_error(lambda: core.patch_namespaced_config_map("cm", NS, ops))  # rv moved on
    assert (status, body["reason"]) == (422, "Invalid")
    status, _ = api_error(
        lambda: core.patch_namespaced_config_map(
            "cm", NS, {"metadata": {"resourceVersion": rv}, "data": {"z": "3"}}
        )
    )
    assert status == 409


def test_status_subresource_is_isolated_and_generation_tracks_spec(custom: Any) -> None:
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, {**credential("c"), "status": {"ignored": True}}
    )
    assert "status" not in created and created["metadata"]["generation"] == 1

    with_status = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, "c", {"status": {"phase": "Ready"}, "spec": {"username": "other"}}
    )
    assert with_status["status"] == {"phase": "Ready"}
    assert with_status["spec"] == {"username": "bot@example.com"}
    assert with_status["metadata"]["generation"] == 1

    relabelled = custom.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "c", {"metadata": {"labels": {"x": "y"}}, "status": {"phase": "Hacked"}}
    )
    assert relabelled["status"] == {"phase": "Ready"} and relabelled["metadata"]["generation"] == 1

    respecced = custom.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "c", {"spec": {"username": "new@example.com"}}
    )
    assert respecced["metadata"]["generation"] == 2 and respecced["status"] == {"phase": "Ready"}

    respecced["status"] = {"phase": "FromPut"}
    replaced = custom.replace_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "c", respecced)
    assert replaced["status"] == {"phase": "FromPut"} and replaced["metadata"]["generation"] == 2


def test_custom_resources_refuse_strategic_merge_and_unconditional_replace(
    api: kubernetes.client.ApiClient, custom: Any
) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, credential("c"))
    status, body = api_error(
        lambda: custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            NS,
            PLURAL,
            "c",
            {"spec": {"username": "x"}},
            _content_type="application/strategic-merge-patch+json",
        )
    )
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")
    status, _ = api_error(
        lambda: custom.replace_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "c", credential("c", username="y")
        )
    )
    assert status == 422


def test_delete_waits_for_finalizers(core: Any) -> None:
    core.create_namespaced_secret(NS, {"metadata": {"name": "plain"}})
    core.delete_namespaced_secret("plain", NS)
    assert api_error(lambda: core.read_namespaced_secret("plain", NS))[0] == 404

    core.create_namespaced_secret(NS, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    core.delete_namespaced_secret("held", NS)
    held = core.read_namespaced_secret("held", NS)
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_secret("held", NS, {"metadata": {"finalizers": None}})
    assert api_error(lambda: core.read_namespaced_secret("held", NS))[0] == 404


def test_list_filters_by_label_and_field_selectors(core: Any) -> None:
    for name, labels in (("a", {"app": "op", "tier": "1"}), ("b", {"app": "op"}), ("c", {"app": "other"})):
        core.create_namespaced_secret(NS, {"metadata": {"name": name, "labels": labels}})

    def names(**selectors: str) -> list[str]:
        return [s.metadata.name for s in core.list_namespaced_secret(NS, **selectors).items]

    assert names(label_selector="app=op") == ["a", "b"]
    assert names(label_selector="app in (op,other),!tier") == ["b", "c"]
    assert names(label_selector="app!=op") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b", label_selector="app=op") == ["a"]
    assert api_error(lambda: names(field_selector="spec.nope=1"))[0] == 400
    listed = core.list_namespaced_secret(NS)
    newest = max(int(s.metadata.resource_version) for s in listed.items)
    assert int(listed.metadata.resource_version) >= newest


def test_watch_delivers_changes_since_a_resource_version(core: Any) -> None:
    since = core.list_namespaced_secret(NS).metadata.resource_version
    events: queue.Queue[tuple[str, str, str]] = queue.Queue()
    # The consumer starts before the writes; whether it subscribes before or after them,
    # watching from `since` must deliver each change exactly once and in order.

    def consume() -> None:
        for event in watch_events(core.list_namespaced_secret, NS, resource_version=since, timeout_seconds=9):
            obj = event["object"]
            events.put((event["type"], obj.metadata.name, (obj.metadata.labels or {}).get("v", "")))
            if event["type"] == "DELETED":
                return  # Watch.stop() would shut the socket under the reader; leave the loop instead

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    core.create_namespaced_secret(NS, {"metadata": {"name": "w", "labels": {"v": "1"}}})
    core.patch_namespaced_secret("w", NS, {"metadata": {"labels": {"v": "2"}}})
    core.delete_namespaced_secret("w", NS)
    seen = [events.get(timeout=5) for _ in range(3)]
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert seen == [("ADDED", "w", "1"), ("MODIFIED", "w", "2"), ("DELETED", "w", "2")]


def test_watch_with_selector_sees_objects_enter_and_leave(core: Any) -> None:
    since = core.list_namespaced_secret(NS).metadata.resource_version
    core.create_namespaced_secret(NS, {"metadata": {"name": "m", "labels": {"pick": "no"}}})
    core.patch_namespaced_secret("m", NS, {"metadata": {"labels": {"pick": "yes"}}})
    core.patch_namespaced_secret("m", NS, {"metadata": {"labels": {"pick": "no"}}})
    stream = watch_events(
        core.list_namespaced_secret, NS, resource_version=since, label_selector="pick=yes", timeout_seconds=1
    )
    assert [(e["type"], e["object"].metadata.labels["pick"]) for e in stream] == [
        ("ADDED", "yes"),
        ("DELETED", "no"),
    ]


def test_watch_from_a_compacted_resource_version_is_410_gone(tmp_path: Path) -> None:
    emulator = ApiServerEmulator(store=ObjectStore(history_limit=2))
    with serving(emulator) as server, kube_client(write_kubeconfig(tmp_path / "kc", server)) as client:
        core: Any = kubernetes.client.CoreV1Api(client)
        since = core.list_namespaced_secret(NS).metadata.resource_version
        for name in "abc":
            core.create_namespaced_secret(NS, {"metadata": {"name": name}})
        stream = watch_events(core.list_namespaced_secret, NS, resource_version=since, timeout_seconds=1)
        with pytest.raises(kubernetes.client.ApiException) as info:
            list(stream)
        assert info.value.status == 410


def test_idle_watch_sends_bookmarks_with_the_current_resource_version(tmp_path: Path) -> None:
    emulator = ApiServerEmulator(bookmark_interval=0.1)
    with serving(emulator) as server, kube_client(write_kubeconfig(tmp_path / "kc", server)) as client:
        core: Any = kubernetes.client.CoreV1Api(client)
        current = core.create_namespaced_secret(NS, {"metadata": {"name": "x"}}).metadata.resource_version
        stream = watch_events(
            core.list_namespaced_secret,
            NS,
            resource_version=current,
            allow_watch_bookmarks=True,
            timeout_seconds=1,
        )
        bookmark = next(stream)
        stream.close()
        assert bookmark["type"] == "BOOKMARK"
        assert bookmark["raw_object"]["metadata"]["resourceVersion"] == current


def test_deleting_a_namespace_removes_its_objects(core: Any) -> None:
    core.create_namespace({"metadata": {"name": "scratch"}})
    core.create_namespaced_secret("scratch", {"metadata": {"name": "inside"}})
    assert core.read_namespace("scratch").status.phase == "Active"
    core.delete_namespace("scratch")
    assert api_error(lambda: core.read_namespaced_secret("inside", "scratch"))[0] == 404
    assert "scratch" not in {n.metadata.name for n in core.list_namespace().items}


OPERATOR_MODULE = textwrap.dedent("""
    import kopf
    import kubernetes

    def core():
        return kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config())

    @kopf.on.event("auth.simacan.com", "v1alpha1", "simacancredentials")
    def mirror(type, name, namespace, **_):
        if type in (None, "ADDED"):
            try:
                core().create_namespaced_secret(
                    namespace, {"metadata": {"name": name + "-token"}, "stringData": {"seen": "yes"}})
            except kubernetes.client.ApiException as e:
                if e.status != 409:
                    raise

    @kopf.on.create("auth.simacan.com", "v1alpha1", "simacancredentials")
    def created(body, spec, **_):
        kopf.info(body, reason="Created", message="noticed the credential")
        return {"user": spec["username"]}

    @kopf.on.delete("auth.simacan.com", "v1alpha1", "simacancredentials")
    def deleted(name, namespace, **_):
        core().delete_namespaced_secret(name + "-token", namespace)
""")


@pytest.fixture
def kopf_operator(cluster: ClusterHandle, tmp_path: Path) -> Iterator[Path]:
    """A throwaway kopf operator in its own process, as the real operator runs; yields its log path."""
    module = tmp_path / "throwaway_operator.py"
    module.write_text(OPERATOR_MODULE)
    log_path = tmp_path / "kopf.log"
    env = {**os.environ, "KUBECONFIG": str(cluster.operator_kubeconfig)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kopf",
                "run",
                "--standalone",
                f"--namespace={NS}",
                "--verbose",
                str(module),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield log_path
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_kopf_operator_runs_its_handlers_against_the_emulator(
    kopf_operator: Path, core: Any, custom: Any
) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, credential("cred"))

    def secret() -> Any:
        try:
            return core.read_namespaced_secret("cred-token", NS)
        except kubernetes.client.ApiException:
            return None

    def handled() -> dict[str, Any] | None:
        obj: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "cred")
        return obj if "created" in obj.get("status", {}) else None

    mirrored = wait_for(secret, what=f"the Secret from on.event; see {kopf_operator}")
    assert base64.b64decode(mirrored.data["seen"]) == b"yes"
    obj = wait_for(handled, what=f"on.create's result in status; see {kopf_operator}")
    assert obj["status"]["created"] == {"user": "bot@example.com"}
    assert obj["metadata"]["finalizers"], "kopf adds its finalizer through a JSON patch"

    def posted_events() -> list[Any] | None:
        found = core.list_namespaced_event(NS, field_selector="involvedObject.name=cred").items
        return [e for e in found if e.reason == "Created"] or None

    posted = wait_for(posted_events, what=f"kopf.info() to post a core/v1 Event; see {kopf_operator}")
    assert posted[0].message == "noticed the credential"
    assert posted[0].involved_object.kind == "SimacanCredential"

    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "cred")

    def gone() -> bool | None:
        try:
            custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "cred")
        except kubernetes.client.ApiException as exc:
            return True if exc.status == 404 else None
        return None

    wait_for(gone, what=f"on.delete to release the finalizer; see {kopf_operator}")
    assert secret() is None, "the on.delete handler deleted the Secret"


def test_unknown_urls_get_kubernetes_status_errors(cluster: ClusterHandle) -> None:
    for path in ("/api/v1/namespaces/default/pods", "/apis/nope.example.com/v1", "/not/kubernetes"):
        with pytest.raises(urllib.error.HTTPError) as info:
            get_json(cluster.server, path)
        body = json.load(info.value)
        assert (info.value.code, body["kind"], body["code"]) == (404, "Status", 404)


def test_lists_page_with_limit_and_continue_and_can_be_metadata_only(
    api: kubernetes.client.ApiClient,
) -> None:
    """As kube-apiserver pages a list (the stale-consumer check reads workloads this way)."""
    apps: Any = kubernetes.client.AppsV1Api(api)
    raw = RawApi(api)
    for i in range(5):
        template = {
            "metadata": {"labels": {"app": "d"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }
        spec = {"replicas": 0, "selector": {"matchLabels": {"app": "d"}}, "template": template}
        apps.create_namespaced_deployment(
            NS, {"metadata": {"name": f"d-{i}", "annotations": {"a": "b"}}, "spec": spec}
        )
    path = f"/apis/apps/v1/namespaces/{NS}/deployments"

    names, token, kinds = [], None, set()
    while True:
        listed = raw.json("GET", path, query={"limit": 2, "continue": token}, accept=METADATA_LIST)
        kinds.add(listed["kind"])
        assert all(set(item) == {"apiVersion", "kind", "metadata"} for item in listed["items"])
        names.append([item["metadata"]["name"] for item in listed["items"]])
        token = listed["metadata"].get("continue")
        if not token:
            break
    assert names == [["d-0", "d-1"], ["d-2", "d-3"], ["d-4"]] and kinds == {"PartialObjectMetadataList"}

    def generation() -> int:
        return int(raw.json("GET", f"{path}/d-0")["metadata"]["generation"])

    assert generation() == 1
    apps.patch_namespaced_deployment("d-0", NS, {"metadata": {"labels": {"x": "y"}}})
    assert generation() == 1
    apps.patch_namespaced_deployment("d-0", NS, {"spec": {"replicas": 1}})
    assert generation() == 2
