"""The opt-in rollout-restarts component (manifests/components/rollout-restarts) on the session's
control plane, for the tests that need it, and what the operator's identity is granted.

The session installs `manifests/` as is, and other tests on the same control plane rely on exactly
that. So the `rollout_restarts` fixture applies the operator's ClusterRole as the component renders
it (`examples/rollout-restarts/`), and afterwards the ClusterRole of `manifests/` again: `kubectl
apply` replaces the rules as a whole, so the grant is gone, which the fixture waits to see.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from localenv.controlplane import ControlPlane
from localenv.k8s import api_client
from localenv.polling import eventually
from tests.e2e.conftest import REPO, kubectl
from tests.support.cluster import ClusterHandle

EVERY_AUTHENTICATED_USER = {"authorization.k8s.io", "authentication.k8s.io"}
"""Self-review APIs that Kubernetes grants to everyone; not ours to trim."""
RESTARTS = {("apps", kind, "patch") for kind in ("deployments", "statefulsets", "daemonsets")}
"""What the component adds."""


def granted(cluster: ClusterHandle, namespace: str) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) the operator's ServiceAccount may use in `namespace`."""
    api = client.AuthorizationV1Api(api_client(cluster.operator_kubeconfig))
    review: Any = {"spec": {"namespace": namespace}}
    status = api.create_self_subject_rules_review(review).status
    assert status is not None
    return {
        (group, resource, verb)
        for rule in status.resource_rules
        for group in rule.api_groups or []
        for resource in rule.resources or []
        for verb in rule.verbs
        if group not in EVERY_AUTHENTICATED_USER
    }


def _apply_operator_cluster_role(plane: ControlPlane, kustomization: Path, scratch: Path) -> None:
    objects = yaml.safe_load_all(kubectl(plane, "kustomize", str(kustomization)))
    (role,) = [o for o in objects if o and o["kind"] == "ClusterRole"]
    path = scratch / f"clusterrole-{kustomization.name}.yaml"
    path.write_text(yaml.safe_dump(role))
    kubectl(plane, "apply", "-f", str(path))


@pytest.fixture
def rollout_restarts(installed: ControlPlane, cluster: ClusterHandle, tmp_path: Path) -> Iterator[None]:
    """The component applied for one test, and taken out again after it."""
    _apply_operator_cluster_role(installed, REPO / "examples" / "rollout-restarts", tmp_path)
    eventually(lambda: granted(cluster, "default") >= RESTARTS, timeout=30, what="patch granted")
    try:
        yield
    finally:
        _apply_operator_cluster_role(installed, REPO / "manifests", tmp_path)
        eventually(lambda: not RESTARTS & granted(cluster, "default"), timeout=30, what="patch revoked")
