"""`simacan-token-operator status` as a person or a script runs it, against the real API server.

It runs as a ServiceAccount that may read SimacanCredentials and Events but no Secret: the
command must need nothing more.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localenv.auth_standin import FakeAuthAPI
from localenv.controlplane import ControlPlane
from tests.conftest import Issue, credential_spec
from tests.support.k8s import GROUP, PLURAL, Namespace, api_client
from tests.support.polling import eventually

VIEWER = "status-viewer"


def viewer_kubeconfig(plane: ControlPlane, ns: Namespace) -> Path:
    """A kubeconfig of an identity that can get/list SimacanCredentials and list Events, nothing else."""
    rbac = client.RbacAuthorizationV1Api(ns.api)
    account: Any = {"metadata": {"name": VIEWER}}
    ns.core.create_namespaced_service_account(ns.name, account)
    role: Any = {
        "metadata": {"name": VIEWER},
        "rules": [
            {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
        ],
    }
    rbac.create_namespaced_role(ns.name, role)
    binding: Any = {
        "metadata": {"name": VIEWER},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": VIEWER},
        "subjects": [{"kind": "ServiceAccount", "name": VIEWER, "namespace": ns.name}],
    }
    rbac.create_namespaced_role_binding(ns.name, binding)
    return plane.kubeconfig_for_service_account(ns.name, VIEWER)


def status(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run(
        [sys.executable, "-m", "simacan_token_operator", "status", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_status_shows_a_ready_credential_and_exits_0_without_reading_secrets(
    installed: ControlPlane, ns: Namespace, issue: Issue
) -> None:
    issued = issue()
    kubeconfig = viewer_kubeconfig(installed, ns)
    viewer = client.CoreV1Api(api_client(kubeconfig))
    try:
        viewer.read_namespaced_secret("fleet-api", ns.name)
        raise AssertionError("the viewer must not be able to read Secrets")
    except ApiException as error:
        assert error.status == 403

    fingerprint = ns.credential("fleet-api")["status"]["tokenFingerprint"]
    result = status(kubeconfig, "-n", ns.name, "fleet-api")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Name:          fleet-api" in out
    assert "Ready:         True (TokenValid)" in out
    assert "Token Secret:  fleet-api" in out
    assert f"Fingerprint:   {fingerprint}" in out
    assert "Expires at:" in out and "(in " in out
    assert "Next refresh:" in out
    assert "Issued" in out and "simacan-token-operator" in out, "the operator's Event is listed"
    assert issued.token not in out + result.stderr


def test_status_exits_1_when_a_credential_shown_is_not_ready(
    installed: ControlPlane, ns: Namespace, auth: FakeAuthAPI, issue: Issue
) -> None:
    issue()
    ns.create_credential("orders-api", credential_spec(auth, secret="no-such-secret"))
    eventually(
        lambda: ns.ready_reason("orders-api") == ("False", "CredentialsSecretNotFound"),
        what="orders-api reported as CredentialsSecretNotFound",
    )
    kubeconfig = viewer_kubeconfig(installed, ns)

    everything = status(kubeconfig, "-n", ns.name)
    assert everything.returncode == 1, everything.stdout + everything.stderr
    assert "Name:          fleet-api" in everything.stdout
    assert "Ready:         False (CredentialsSecretNotFound)" in everything.stdout
    assert "no-such-secret" in everything.stdout, "the message names what to fix"

    assert status(kubeconfig, "-n", ns.name, "orders-api").returncode == 1
    assert status(kubeconfig, "-n", ns.name, "fleet-api").returncode == 0


def test_status_of_a_missing_credential_is_an_error_exit_2(installed: ControlPlane, ns: Namespace) -> None:
    result = status(installed.admin_kubeconfig, "-n", ns.name, "nobody")
    assert result.returncode == 2
    assert f"SimacanCredential {ns.name}/nobody not found" in result.stderr
