"""Who may do what: the default installs cannot patch workloads, the rollout-restarts component adds
exactly that to either install, and the RBAC table in docs/security.md lists every rendered verb and no other.

Everything is rendered with `kubectl kustomize`, as `kubectl apply -k` would send it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

from tests.static.conftest import Manifest, load_all
from tests.static.tools import REPO_ROOT, kustomize

COMPONENT = REPO_ROOT / "manifests" / "components" / "rollout-restarts"
WITH_COMPONENT = {
    "install_yaml": REPO_ROOT / "examples" / "rollout-restarts",
    "namespaced_yaml": REPO_ROOT / "examples" / "rollout-restarts-namespaced",
}
ROLE_KIND = {"install_yaml": "ClusterRole", "namespaced_yaml": "Role"}
OPERATOR_ROLE = "simacan-token-operator"
LEADER_ELECTION_ROLE = "simacan-token-operator-leader-election"
WORKLOADS = ("deployments", "statefulsets", "daemonsets")
RESTART_RULE = {"apiGroups": ["apps"], "resources": list(WORKLOADS), "verbs": ["patch"]}
RBAC_PAGE = REPO_ROOT / "docs" / "security.md"
RBAC_SECTION = "## What the cluster-wide role grants, and why"

Grant = tuple[str, str, str, str]
"""(role, API group, resource, verb)"""


def grants(rules: Iterable[Manifest], role: str) -> set[Grant]:
    return {
        (role, group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def roles(objects: list[Manifest]) -> dict[tuple[str, str], Manifest]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects if o["kind"] in ("Role", "ClusterRole")}


def without_role(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if (o["kind"], o["metadata"]["name"]) != (kind, OPERATOR_ROLE)]


@pytest.fixture(scope="module")
def with_component() -> dict[str, list[Manifest]]:
    return {variant: load_all(kustomize(path)) for variant, path in WITH_COMPONENT.items()}


@pytest.mark.parametrize("variant", list(ROLE_KIND))
def test_the_default_installs_cannot_patch_workloads(variant: str, request: pytest.FixtureRequest) -> None:
    objects = load_all(request.getfixturevalue(variant))
    for (kind, name), role in roles(objects).items():
        apps = {
            (verb, resource) for _, group, resource, verb in grants(role["rules"], name) if group == "apps"
        }
        assert apps <= {(verb, r) for r in WORKLOADS for verb in ("get", "list")}, f"{kind} {name}: {apps}"
    assert ("get", "deployments") in {
        (verb, resource)
        for _, _, resource, verb in grants(roles(objects)[(ROLE_KIND[variant], OPERATOR_ROLE)]["rules"], "")
    }, "reading restart targets stays in the default install"


@pytest.mark.parametrize("variant", list(ROLE_KIND))
def test_the_component_adds_exactly_the_patch_rule_to_the_installs_own_role(
    variant: str, with_component: dict[str, list[Manifest]], request: pytest.FixtureRequest
) -> None:
    default = load_all(request.getfixturevalue(variant))
    extended = with_component[variant]
    kind = ROLE_KIND[variant]
    before = roles(default)[(kind, OPERATOR_ROLE)]
    after = roles(extended)[(kind, OPERATOR_ROLE)]
    assert after["rules"] == [*before["rules"], RESTART_RULE]
    assert {k: v for k, v in after.items() if k != "rules"} == {
        k: v for k, v in before.items() if k != "rules"
    }
    assert without_role(extended, kind) == without_role(default, kind), "nothing else changes"


def test_the_namespaced_install_with_the_component_stays_in_its_namespace(
    with_component: dict[str, list[Manifest]],
) -> None:
    objects = with_component["namespaced_yaml"]
    assert not [o["kind"] for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    assert not [o["metadata"]["name"] for o in objects if "namespace" in o["metadata"]]
    patch = {
        (o["kind"], o["metadata"]["name"])
        for o in objects
        if o["kind"] in ("Role", "ClusterRole")
        for rule in o["rules"]
        if "patch" in rule["verbs"] and "apps" in rule["apiGroups"]
    }
    assert patch == {("Role", OPERATOR_ROLE)}


def test_the_component_is_a_kustomize_component() -> None:
    """Only a Component can be added under `components:` of either install."""
    kustomization = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    assert (kustomization["apiVersion"], kustomization["kind"]) == (
        "kustomize.config.k8s.io/v1alpha1",
        "Component",
    )
    for path in WITH_COMPONENT.values():
        example = yaml.safe_load((path / "kustomization.yaml").read_text())
        assert [Path(c).name for c in example["components"]] == ["rollout-restarts"]


# -- the table in docs/security.md ----------------------------------------------------------------


def readme_table() -> set[Grant]:
    """Rows `| \\`role\\` ... | group | \\`resources\\`, ... | verb, ... | why |` of the RBAC section."""
    text = RBAC_PAGE.read_text()
    section = text[text.index(RBAC_SECTION) :]
    section = section[: section.index("\n## ", len(RBAC_SECTION))]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows, "the RBAC table has no rows"
    table: set[Grant] = set()
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        role = re.findall(r"`([^`]+)`", cells[0])[0]
        group = "" if cells[1] == "core" else cells[1].strip("`")
        resources = re.findall(r"`([^`]+)`", cells[2])
        verbs = [verb.strip() for verb in cells[3].split(",")]
        assert resources and all(re.fullmatch(r"[a-z]+", verb) for verb in verbs), row
        table |= {(role, group, resource, verb) for resource in resources for verb in verbs}
    return table


def rendered(install_yaml: str, with_component: dict[str, list[Manifest]]) -> set[Grant]:
    default = roles(load_all(install_yaml))
    assert set(default) == {("ClusterRole", OPERATOR_ROLE), ("Role", LEADER_ELECTION_ROLE)}, (
        "a new role needs rows in the table of docs/security.md"
    )
    found = grants(default[("ClusterRole", OPERATOR_ROLE)]["rules"], OPERATOR_ROLE)
    found |= grants(default[("Role", LEADER_ELECTION_ROLE)]["rules"], LEADER_ELECTION_ROLE)
    extended = roles(with_component["install_yaml"])
    added = grants(extended[("ClusterRole", OPERATOR_ROLE)]["rules"], OPERATOR_ROLE) - found
    return found | {("rollout-restarts", group, resource, verb) for _, group, resource, verb in added}


def test_readme_rbac_table_lists_every_rendered_verb_and_no_other(
    install_yaml: str, with_component: dict[str, list[Manifest]]
) -> None:
    table, actual = readme_table(), rendered(install_yaml, with_component)
    assert not actual - table, f"granted but not in the docs' table: {sorted(actual - table)}"
    assert not table - actual, f"in the docs' table but not granted: {sorted(table - actual)}"


def test_the_table_comparison_is_not_vacuous(
    install_yaml: str, with_component: dict[str, list[Manifest]]
) -> None:
    actual = rendered(install_yaml, with_component)
    assert ("rollout-restarts", "apps", "deployments", "patch") in actual
    assert ("simacan-token-operator", "", "secrets", "delete") in actual
    assert ("simacan-token-operator-leader-election", "coordination.k8s.io", "leases", "update") in actual
    roles_in_table = {role for role, _, _, _ in readme_table()}
    assert roles_in_table == {OPERATOR_ROLE, LEADER_ELECTION_ROLE, "rollout-restarts"}
