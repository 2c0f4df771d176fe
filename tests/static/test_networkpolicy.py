"""The NetworkPolicy: /metrics only from Prometheus pods in namespace `monitoring` (by the immutable
name label); egress only DNS, API server, HTTPS. The patches its header documents apply and do what
they say."""

from __future__ import annotations

import os
import re
from pathlib import Path

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.static.conftest import Manifest, load_all
from tests.static.tools import REPO_ROOT, kustomize

VARIANTS = ["install_yaml", "namespaced_yaml"]
POLICY_FILE = REPO_ROOT / "manifests" / "base" / "networkpolicy.yaml"
NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server to the namespace's name, immutable
DEFAULT_SCRAPER = {
    "namespaceSelector": {"matchLabels": {NAME_LABEL: "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
KUBERNETES_VERSION = "1.36.0"


def _objects(variant: str, request: pytest.FixtureRequest) -> list[Manifest]:
    return load_all(request.getfixturevalue(variant))


def _policy(objects: list[Manifest]) -> Manifest:
    (policy,) = [o for o in objects if o["kind"] == "NetworkPolicy"]
    return policy


def _pod_labels(objects: list[Manifest]) -> dict[str, str]:
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_policy_selects_the_operator_pods_for_ingress_and_egress(
    variant: str, request: pytest.FixtureRequest
) -> None:
    objects = _objects(variant, request)
    spec = _policy(objects)["spec"]

    assert spec["podSelector"]["matchLabels"].items() <= _pod_labels(objects).items()
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_metrics_only_from_prometheus_pods_in_the_namespace_named_monitoring(
    variant: str, request: pytest.FixtureRequest
) -> None:
    """One `from` entry holding both selectors: a pod must match both (two entries admit either)."""
    spec = _policy(_objects(variant, request))["spec"]

    (rule,) = spec["ingress"]
    assert rule["from"] == [DEFAULT_SCRAPER]
    assert rule["ports"] == [{"protocol": "TCP", "port": "metrics"}]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_metrics_port_the_policy_names_is_the_containers(
    variant: str, request: pytest.FixtureRequest
) -> None:
    objects = _objects(variant, request)
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (service,) = [o for o in objects if o["kind"] == "Service"]

    assert "metrics" in {port["name"] for port in container["ports"]}
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["metrics"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_egress_only_dns_the_api_server_and_https(variant: str, request: pytest.FixtureRequest) -> None:
    spec = _policy(_objects(variant, request))["spec"]

    ports = {(port["protocol"], port["port"]) for rule in spec["egress"] for port in rule["ports"]}
    assert ports == {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 6443)}
    assert all("ports" in rule for rule in spec["egress"]), "a rule without ports allows every port"


# --- the patches the policy's header documents ----------------------------------------------------------


def header_patches() -> list[str]:
    """Each `patches:` block in the file's leading comment, as the kustomization text it is."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in POLICY_FILE.read_text().splitlines():
        if not line.startswith("#"):
            break
        if line == "#   patches:":
            current = []
            blocks.append(current)
        if current is not None:
            if line.startswith("#   "):
                current.append(line[4:])
            else:
                current = None
    return ["\n".join(block) + "\n" for block in blocks]


def patched_policy(patch: str, tmp_path: Path) -> Manifest:
    """The cluster install with `patch` applied by a user's overlay, as `kubectl apply -k` builds it."""
    manifests = os.path.relpath(REPO_ROOT / "manifests", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(f"resources:\n  - {manifests}\n{patch}")
    return _policy(load_all(kustomize(tmp_path)))


def _valid(policy: Manifest) -> None:
    kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)


def test_the_header_documents_a_scraper_patch_and_an_egress_patch() -> None:
    patches = header_patches()
    assert len(patches) == 2, patches
    assert "/spec/ingress/0/from/0" in patches[0]
    assert "/spec/egress" in patches[1] and "ipBlock" in patches[1]


def test_the_documented_scraper_patch_admits_another_prometheus_and_nothing_more(
    tmp_path: Path, install_yaml: str
) -> None:
    default = _policy(load_all(install_yaml))
    policy = patched_policy(header_patches()[0], tmp_path)
    _valid(policy)

    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {NAME_LABEL: "observability"}},
            "podSelector": {"matchLabels": {"app": "prometheus", "component": "server"}},
        }
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": "metrics"}]
    assert policy["spec"]["egress"] == default["spec"]["egress"]


def test_the_documented_egress_patch_names_addresses_for_every_port(
    tmp_path: Path, install_yaml: str
) -> None:
    default = _policy(load_all(install_yaml))
    policy = patched_policy(header_patches()[1], tmp_path)
    _valid(policy)

    assert policy["spec"]["ingress"] == default["spec"]["ingress"]
    egress = policy["spec"]["egress"]
    assert all(rule.get("to") and rule.get("ports") for rule in egress), "each rule names peers and ports"
    by_port = {
        (port["protocol"], port["port"]): list(rule["to"]) for rule in egress for port in rule["ports"]
    }
    assert set(by_port) == {("UDP", 53), ("TCP", 53), ("TCP", 6443), ("TCP", 443)}
    for port in [("TCP", 6443), ("TCP", 443)]:
        cidrs = [peer["ipBlock"]["cidr"] for peer in by_port[port]]
        assert cidrs and all(re.fullmatch(r"[0-9.]+/32", cidr) for cidr in cidrs), (port, by_port[port])
    dns = by_port[("UDP", 53)]
    assert dns == [
        {
            "namespaceSelector": {"matchLabels": {NAME_LABEL: "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]


def test_each_documented_patch_targets_the_policy_with_a_json_patch() -> None:
    """The header's blocks parse as a kustomization's `patches` aimed at this policy."""
    patches = header_patches()
    assert patches, "no documented patch found"
    for patch in patches:
        (entry,) = yaml.safe_load(patch)["patches"]
        assert entry["target"] == {"kind": "NetworkPolicy", "name": "simacan-token-operator"}
        assert yaml.safe_load(entry["patch"])[0]["op"] == "replace"
