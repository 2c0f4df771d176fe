"""End-to-end tier: the operator against a real kube-apiserver, etcd and kube-controller-manager.

`manifests/` is applied as is (CRD, namespace, RBAC, Deployment). Pods run only for tests that ask
for the `node` fixture (a real kubelet, localenv/node.py); the operator runs as a local process
with a token of the ServiceAccount the manifests create, so it has exactly the permissions the
manifests grant.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from localenv.controlplane import ControlPlane, running_control_plane
from localenv.k8s import api_client
from localenv.node import Node, running_node
from localenv.polling import eventually
from tests.conftest import SUMMARY
from tests.support.cluster import ClusterHandle

REPO = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "simacan-token-operator"
OPERATOR_ACCOUNT = "simacan-token-operator"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with running_control_plane(Path(tmp_path_factory.mktemp("control-plane"))) as plane:
        SUMMARY.append(
            f"e2e: control plane (etcd, kube-apiserver, kube-controller-manager) "
            f"provisioned in {plane.provision_seconds:.1f}s"
        )
        yield plane


@pytest.fixture(scope="module")
def node(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A real kubelet with containerd for the tests of one module (kubelet syncFrequency 10 s)."""
    with running_node(control_plane, Path(tmp_path_factory.mktemp("node"))) as started:
        SUMMARY.append(f"e2e: node (containerd, kubelet) provisioned in {started.provision_seconds:.1f}s")
        yield started


def kubectl(plane: ControlPlane, *args: str) -> str:
    binary = shutil.which("kubectl")
    assert binary, "kubectl is required: run localenv/install-deps.sh"
    result = subprocess.run(
        [binary, "--kubeconfig", str(plane.admin_kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="session")
def installed(control_plane: ControlPlane) -> ControlPlane:
    """`kubectl apply -k manifests/` exactly as a user installs the operator."""
    kubectl(control_plane, "apply", "-k", str(REPO / "manifests"))
    api = api_client(control_plane.admin_kubeconfig)
    extensions = client.ApiextensionsV1Api(api)

    def established(name: str) -> bool:
        crd = extensions.read_custom_resource_definition(name)
        conditions = (crd.status.conditions if crd.status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    for crd in ("simacancredentials.auth.simacan.com", "clustersimacancredentials.auth.simacan.com"):
        eventually(lambda: established(crd), timeout=30, what=f"CRD {crd} Established")  # noqa: B023
    core = client.CoreV1Api(api)
    eventually(
        lambda: core.read_namespaced_service_account(OPERATOR_ACCOUNT, OPERATOR_NAMESPACE),
        timeout=30,
        what="operator ServiceAccount",
    )
    return control_plane


@pytest.fixture(scope="session")
def cluster(installed: ControlPlane) -> ClusterHandle:
    operator_kubeconfig = installed.kubeconfig_for_service_account(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)
    return ClusterHandle(
        name="real",
        server=installed.server,
        kubeconfig=installed.admin_kubeconfig,
        operator_kubeconfig=operator_kubeconfig,
        supports_garbage_collection=True,
    )
