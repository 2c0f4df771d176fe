"""The NetworkPolicy: /metrics only from a namespace the user labels; egress only DNS, API server, HTTPS."""

from __future__ import annotations

import pytest

from tests.static.conftest import Manifest, load_all

VARIANTS = ["install_yaml", "namespaced_yaml"]
SCRAPER_LABEL = {"auth.simacan.com/scrape-token-operator": "true"}


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
def test_metrics_only_from_labelled_namespaces_and_nothing_else_in(
    variant: str, request: pytest.FixtureRequest
) -> None:
    spec = _policy(_objects(variant, request))["spec"]

    (rule,) = spec["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": SCRAPER_LABEL}}]
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
