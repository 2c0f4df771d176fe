"""The operator's identity may do exactly what it needs: no more (compared here), no less (the
scenario tests run the operator under this identity and fail on any 403)."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from tests.e2e.conftest import OPERATOR_NAMESPACE
from tests.support.cluster import ClusterHandle
from tests.support.k8s import Namespace, api_client

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
    *{
        ("apps", kind, verb)
        for kind in ("deployments", "statefulsets", "daemonsets")
        for verb in ("get", "list", "patch")
    },
}
LEADER_ELECTION = {
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
}
EVERY_AUTHENTICATED_USER = {"authorization.k8s.io", "authentication.k8s.io"}
"""Self-review APIs that Kubernetes grants to everyone; not ours to trim."""


def granted(cluster: ClusterHandle, namespace: str) -> set[tuple[str, str, str]]:
    api = client.AuthorizationV1Api(api_client(cluster.operator_kubeconfig))
    review: Any = {"spec": {"namespace": namespace}}
    status = api.create_self_subject_rules_review(review).status
    assert status is not None
    rules = status.resource_rules
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.api_groups or []
        for resource in rule.resources or []
        for verb in rule.verbs
        if group not in EVERY_AUTHENTICATED_USER
    }


def test_operator_may_do_exactly_what_it_needs_in_a_users_namespace(
    cluster: ClusterHandle, ns: Namespace
) -> None:
    assert granted(cluster, ns.name) == NEEDED


def test_operator_may_also_hold_its_lease_in_its_own_namespace(cluster: ClusterHandle) -> None:
    assert granted(cluster, OPERATOR_NAMESPACE) == NEEDED | LEADER_ELECTION
