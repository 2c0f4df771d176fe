"""The local control plane behaves like a real cluster in the ways the e2e tier relies on."""

from __future__ import annotations

import ssl
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from localenv.controlplane import (
    ControlPlane,
    ControlPlaneError,
    api_client_from_kubeconfig,
    running_control_plane,
)

pytestmark = pytest.mark.e2e

DEADLINE_SECONDS = 30.0


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with running_control_plane(tmp_path_factory.mktemp("controlplane")) as plane:
        print(f"\ncontrol plane provisioned in {plane.provision_seconds:.2f}s; {_memory(plane)}")
        yield plane
        print(f"\ncontrol plane after the tests: {_memory(plane)}")


@pytest.fixture(scope="module")
def admin(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with control_plane.admin_api_client() as api:
        yield api


@pytest.fixture
def namespace(admin: client.ApiClient) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(admin)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_SECONDS}s: {what}")
        time.sleep(0.2)


def test_apiserver_reports_ready(control_plane: ControlPlane) -> None:
    context = ssl.create_default_context(cafile=str(control_plane.ca_file))
    request = urllib.request.Request(
        f"{control_plane.server}/readyz?verbose",
        headers={"Authorization": f"Bearer {control_plane.admin_token}"},
    )
    with urllib.request.urlopen(request, context=context, timeout=5) as response:
        body = response.read().decode()
    assert response.status == 200
    assert "readyz check passed" in body
    assert "[+]etcd ok" in body


def test_secret_round_trips_through_etcd(admin: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(admin)
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="probe"), string_data={"token": "value-1"}),
    )

    stored = core.read_namespaced_secret("probe", namespace)

    assert stored.data == {"token": "dmFsdWUtMQ=="}


def test_garbage_collector_deletes_configmap_whose_owner_is_deleted(
    admin: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(admin)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    assert owner.metadata is not None and owner.metadata.uid
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid, block_owner_deletion=False
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dependent", owner_references=[reference])),
    )

    core.delete_namespaced_config_map("owner", namespace)

    eventually(
        lambda: _absent(lambda: core.read_namespaced_config_map("dependent", namespace)),
        "dependent ConfigMap garbage-collected",
    )


def test_service_account_gets_only_what_rbac_grants(
    control_plane: ControlPlane, admin: client.ApiClient, namespace: str
) -> None:
    client.CoreV1Api(admin).create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    kubeconfig = control_plane.kubeconfig_for_service_account(namespace, "reader")

    with api_client_from_kubeconfig(kubeconfig) as reader_api:
        as_reader = client.CoreV1Api(reader_api)
        assert _status(lambda: as_reader.list_namespaced_secret(namespace)) == 403

        _grant_secret_listing(admin, namespace, "reader")

        eventually(
            lambda: _status(lambda: as_reader.list_namespaced_secret(namespace)) == 200,
            "RoleBinding lets the ServiceAccount list secrets",
        )
        assert _status(lambda: as_reader.list_namespaced_secret("default")) == 403
        assert _status(lambda: as_reader.list_namespaced_config_map(namespace)) == 403


def _grant_secret_listing(admin: client.ApiClient, namespace: str, service_account: str) -> None:
    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="secret-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="secret-reader"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="secret-reader"
            ),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name=service_account, namespace=namespace)],
        ),
    )


def test_failed_start_reports_log_tail_and_stops_what_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name in ("kube-apiserver", "kube-controller-manager"):
        script = fake_bin / name
        script.write_text("#!/bin/sh\necho 'Error: unknown flag: --made-up-for-this-test' >&2\nexit 1\n")
        script.chmod(0o755)
    monkeypatch.setenv("SIMACAN_K8S_BIN_DIR", str(fake_bin))
    work_dir = tmp_path / "cluster"

    with (
        pytest.raises(ControlPlaneError, match="unknown flag: --made-up-for-this-test"),
        running_control_plane(work_dir),
    ):
        pytest.fail("a control plane without an apiserver must not start")

    assert _processes_using(work_dir) == []


def _processes_using(work_dir: Path) -> list[int]:
    """Pids whose command line mentions work_dir, i.e. processes this control plane started."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(work_dir).encode() in cmdline:
                found.append(int(proc.name))
    return found


def _memory(plane: ControlPlane) -> str:
    usage = ", ".join(f"{name} {kib // 1024} MiB" for name, kib in plane.resident_memory_kib().items())
    return f"resident memory: {usage}"


def _status(call: Callable[[], object]) -> int:
    try:
        call()
    except ApiException as error:
        return int(error.status)
    return 200


def _absent(read: Callable[[], object]) -> bool:
    return _status(read) == 404
