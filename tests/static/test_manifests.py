"""What `kubectl apply -k` installs: schema-valid for Kubernetes 1.36, locked down, and wired consistently.

kubernetes-validate ships strict schemas for 1.36 (and 1.37); strict mode rejects unknown fields, which
is how a typo in a securityContext would otherwise pass silently. It has no schema for our own kind,
SimacanCredential: no manifest here is one, and any that appeared would fail as unvalidated.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.static.conftest import Manifest, load_all
from tests.static.tools import REPO_ROOT

KUBERNETES_VERSION = "1.36.0"
INSTALL_NAMESPACE = "simacan-token-operator"
IMAGE_REPOSITORY = "ghcr.io/simacan/simacan-token-operator"
NAMESPACED_DIR = REPO_ROOT / "manifests" / "namespaced"
CLUSTER_SCOPED_KINDS = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
}
VARIANTS = ["install_yaml", "namespaced_yaml"]


def only(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(objects: list[Manifest]) -> dict[str, Any]:
    containers = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


@pytest.mark.static_tools
@pytest.mark.parametrize("variant", [*VARIANTS, "crds_yaml"])
def test_every_object_passes_the_strict_kubernetes_schema(
    variant: str, request: pytest.FixtureRequest
) -> None:
    objects = load_all(request.getfixturevalue(variant))
    assert objects, f"{variant} rendered nothing"
    for manifest in objects:
        what = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            validated = kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{what} is invalid for Kubernetes {error.version}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"{what} could not be validated: {error.message}")
        assert validated == "1.36"


@pytest.mark.static_tools
def test_strict_validation_rejects_a_misspelt_field(install_yaml: str) -> None:
    """Guards the test above against passing vacuously (say, if strict mode stopped being strict)."""
    deployment = copy.deepcopy(only(load_all(install_yaml), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = (
        True
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_deployment_is_locked_down_and_highly_available(variant: str, request: pytest.FixtureRequest) -> None:
    objects = load_all(request.getfixturevalue(variant))
    deployment = only(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    main = container(objects)
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert not security.get("capabilities", {}).get("add")
    assert security.get("privileged", False) is False
    for bound in ("requests", "limits"):
        assert set(main["resources"][bound]) >= {"cpu", "memory"}, f"{bound} must cover cpu and memory"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # The only writable path is /tmp, an emptyDir.
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts == {"/tmp": "tmp"}
    assert "emptyDir" in volumes["tmp"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_deployment_service_and_image_fit_together(variant: str, request: pytest.FixtureRequest) -> None:
    objects = load_all(request.getfixturevalue(variant))
    main = container(objects)
    pod_template = only(objects, "Deployment")["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert main["livenessProbe"]["httpGet"]["port"] == main["readinessProbe"]["httpGet"]["port"] == "health"
    env = {e["name"]: e for e in main["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    service = only(objects, "Service")
    assert service["spec"]["selector"].items() <= pod_template["metadata"]["labels"].items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    account = pod_template["spec"]["serviceAccountName"]
    only(objects, "ServiceAccount", account)
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert main["image"] == f"{IMAGE_REPOSITORY}:{version}"


def test_cluster_install_watches_all_namespaces_from_its_own(install_yaml: str) -> None:
    objects = load_all(install_yaml)
    assert container(objects)["args"] == [
        "run",
        "--all-namespaces",
        "--leader-election-namespace=$(POD_NAMESPACE)",
    ]
    for manifest in objects:
        if manifest["kind"] not in CLUSTER_SCOPED_KINDS:
            assert manifest["metadata"].get("namespace") == INSTALL_NAMESPACE, manifest["metadata"]["name"]
        for subject in manifest.get("subjects", []):
            assert subject["namespace"] == INSTALL_NAMESPACE


def test_namespaced_install_watches_only_its_own_namespace(namespaced_yaml: str) -> None:
    assert container(load_all(namespaced_yaml))["args"] == [
        "run",
        "--namespace=$(POD_NAMESPACE)",
        "--leader-election-namespace=$(POD_NAMESPACE)",
    ]


def test_namespaced_install_needs_no_cluster_rights(namespaced_yaml: str) -> None:
    """`kubectl apply -n TEAM-NS -k` places everything: nothing is cluster-wide or names a namespace."""
    objects = load_all(namespaced_yaml)
    assert not [o["kind"] for o in objects if o["kind"] in CLUSTER_SCOPED_KINDS]
    assert not [o["metadata"]["name"] for o in objects if "namespace" in o["metadata"]]
    account = only(objects, "ServiceAccount")["metadata"]["name"]
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert len(bindings) == 2
    for binding in bindings:
        # A ServiceAccount subject without a namespace means the binding's own namespace.
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
        assert binding["roleRef"]["kind"] == "Role"
        only(objects, "Role", binding["roleRef"]["name"])


def test_namespaced_role_grants_exactly_the_cluster_role_rules(
    install_yaml: str, namespaced_yaml: str
) -> None:
    cluster_role = only(load_all(install_yaml), "ClusterRole", "simacan-token-operator")
    role = only(load_all(namespaced_yaml), "Role", "simacan-token-operator")
    assert role["rules"] == cluster_role["rules"]


def test_both_installs_share_one_base() -> None:
    """One copy of the Deployment and rules: the cluster-wide and namespaced installs build on base/."""
    assert "base" in _resources(REPO_ROOT / "manifests" / "kustomization.yaml")
    assert _resources(NAMESPACED_DIR / "kustomization.yaml") == ["../base"]


def _resources(kustomization: Path) -> list[str]:
    resources: list[str] = yaml.safe_load(kustomization.read_text())["resources"]
    return resources


def test_crd_matches_the_operator_api() -> None:
    (crd,) = load_all((REPO_ROOT / "crds" / "simacancredentials.auth.simacan.com.yaml").read_text())
    assert crd["spec"]["group"] == "auth.simacan.com"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == "SimacanCredential"
    served = [v for v in crd["spec"]["versions"] if v["served"]]
    assert [v["name"] for v in served] == ["v1alpha1"]
    assert "status" in served[0]["subresources"]
    assert crd["metadata"]["name"] == "simacancredentials.auth.simacan.com"
