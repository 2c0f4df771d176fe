"""The operator's identity may do exactly what it needs: no more (compared here), no less (the
scenario tests run the operator under this identity and fail on any 403)."""

from __future__ import annotations

from localenv.k8s import Namespace
from tests.e2e.components import RESTARTS, granted, rollout_restarts
from tests.e2e.conftest import OPERATOR_NAMESPACE
from tests.support.cluster import ClusterHandle

__all__ = ["rollout_restarts"]  # the fixture, used below

NEEDED = {
    ("auth.simacan.com", "simacancredentials", "get"),
    ("auth.simacan.com", "simacancredentials", "list"),
    ("auth.simacan.com", "simacancredentials", "watch"),
    ("auth.simacan.com", "simacancredentials/status", "patch"),
    ("auth.simacan.com", "clustersimacancredentials", "get"),
    ("auth.simacan.com", "clustersimacancredentials", "list"),
    ("auth.simacan.com", "clustersimacancredentials", "watch"),
    ("auth.simacan.com", "clustersimacancredentials/status", "patch"),
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
    ("", "secrets", "get"),
    ("", "secrets", "list"),
    ("", "secrets", "watch"),
    ("", "secrets", "create"),
    ("", "secrets", "update"),
    ("", "secrets", "delete"),
    ("", "events", "create"),
    ("", "events", "patch"),
    # Read only: restart targets and the stale-consumer check. Patching them is opt-in (RESTARTS).
    *{
        ("apps", kind, verb)
        for kind in ("deployments", "statefulsets", "daemonsets")
        for verb in ("get", "list")
    },
}
LEADER_ELECTION = {
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
}


def test_operator_may_do_exactly_what_it_needs_in_a_users_namespace(
    cluster: ClusterHandle, ns: Namespace
) -> None:
    assert granted(cluster, ns.name) == NEEDED


def test_operator_may_also_hold_its_lease_in_its_own_namespace(cluster: ClusterHandle) -> None:
    assert granted(cluster, OPERATOR_NAMESPACE) == NEEDED | LEADER_ELECTION


def test_the_rollout_restarts_component_grants_patch_on_workloads_and_nothing_else(
    cluster: ClusterHandle, ns: Namespace, rollout_restarts: None
) -> None:
    assert granted(cluster, ns.name) == NEEDED | RESTARTS
    assert granted(cluster, "kube-system") == NEEDED | RESTARTS, "the ClusterRole's grant is cluster-wide"
