"""`scripts/demo --kubeconfig`: the demo on a cluster the user already has, leaving it as it was.

A control plane of this module's own stands in for the user's cluster (a fresh one: the CRD is
missing at first, which the session's shared control plane cannot promise). `scripts/demo` runs as a
user runs it, with $PYTHON set to this interpreter, which has every package, so no .venv is made.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localenv.controlplane import ControlPlane, running_control_plane
from localenv.k8s import api_client
from localenv.polling import eventually
from tests.e2e.conftest import REPO, kubectl

CRD = "simacancredentials.auth.simacan.com"
NAMESPACE_LINE = re.compile(r"created namespace (simacan-demo-[0-9a-f]{6})")


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with running_control_plane(Path(tmp_path_factory.mktemp("existing-cluster"))) as started:
        yield started


@pytest.fixture
def api(plane: ControlPlane) -> Iterator[client.ApiClient]:
    with api_client(plane.admin_kubeconfig) as opened:
        yield opened


class Demo:
    """`scripts/demo --kubeconfig ...` with its output read as it comes."""

    def __init__(self, plane: ControlPlane, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("SIMACAN_USERNAME", "SIMACAN_PASSWORD")}
        self.process = subprocess.Popen(
            [str(REPO / "scripts" / "demo"), "--kubeconfig", str(plane.admin_kubeconfig), *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**env, "PYTHON": sys.executable},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def namespace(self) -> str:
        def found() -> str:
            match = NAMESPACE_LINE.search(self.output)
            assert match, f"no namespace named yet; the demo printed:\n{self.output}"
            return match.group(1)

        name: str = eventually(found, timeout=60, what="the demo naming its namespace")
        return name

    def wait(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        self._reader.join(timeout=10)
        return code


def token_secret(api: client.ApiClient, namespace: str, name: str) -> Any:
    try:
        secret: Any = client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return secret if "token" in (secret.data or {}) else None


def gone(api: client.ApiClient, namespace: str) -> bool:
    try:
        client.CoreV1Api(api).read_namespace(namespace)
    except ApiException as error:
        return bool(error.status == 404)
    return False


def namespace_names(api: client.ApiClient) -> set[str]:
    listed: Any = client.CoreV1Api(api).list_namespace()
    return {ns.metadata.name for ns in listed.items}


def crd_uid(api: client.ApiClient) -> str | None:
    try:
        crd: Any = client.ApiextensionsV1Api(api).read_custom_resource_definition(CRD)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return str(crd.metadata.uid)


def test_the_demo_runs_on_a_cluster_without_the_crd_and_removes_all_it_applied(
    plane: ControlPlane, api: client.ApiClient
) -> None:
    assert crd_uid(api) is None
    namespaces_before = namespace_names(api)
    demo = Demo(plane, "--for", "20", "--token-lifetime", "6")
    namespace = demo.namespace()
    secret = eventually(
        lambda: token_secret(api, namespace, "fleet-api"), timeout=60, what="the token Secret fleet-api"
    )
    assert secret.metadata.owner_references, "the token Secret is the operator's"
    code = demo.wait(timeout=180)
    assert code == 0, demo.output
    assert "PASS: 2 credentials got tokens" in demo.output
    assert f"KUBECONFIG={plane.admin_kubeconfig.resolve()} kubectl get simacancredentials -A" in demo.output
    assert "local control plane (etcd" not in demo.output, "it started a control plane of its own"
    # Gone when the demo has exited, not some time later; and nothing else was left or taken.
    assert gone(api, namespace)
    assert crd_uid(api) is None
    assert namespace_names(api) == namespaces_before
    assert f"deleted namespace {namespace}" in demo.output and f"deleted the CRD {CRD}" in demo.output


def test_sigterm_removes_the_namespace_and_leaves_an_installed_crd(
    plane: ControlPlane, api: client.ApiClient
) -> None:
    kubectl(plane, "apply", "-k", str(REPO / "crds"))
    before = crd_uid(api)
    assert before is not None
    demo = Demo(plane)  # no --for: runs until stopped
    namespace = demo.namespace()
    eventually(lambda: token_secret(api, namespace, "fleet-api"), timeout=60, what="the token Secret")
    demo.process.send_signal(signal.SIGTERM)
    assert demo.wait(timeout=150) == 128 + signal.SIGTERM, demo.output
    assert gone(api, namespace), demo.output
    assert crd_uid(api) == before, "the CRD the demo found was deleted or replaced"
    assert "already installed: the demo uses it and leaves it as it is" in demo.output
