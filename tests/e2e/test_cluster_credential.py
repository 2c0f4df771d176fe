"""ClusterSimacanCredential against a real API server: the fast tier's scenarios again (under the
manifests' RBAC), plus what only real Kubernetes does: garbage collection of the namespaced
Secrets of a cluster-scoped owner, and Terminating namespaces."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client

from localenv.fakeauth import FakeAuthAPI
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually
from tests.integration.test_cluster_credential import (
    SECRET,
    Fleet,
    all_served,
    served_in_three_namespaces,
    test_a_credentials_secret_outside_the_cluster_credentials_namespace_is_invalid_spec,
    test_a_foreign_secret_in_one_namespace_is_listed_while_the_others_are_served,
    test_a_rotated_password_is_one_new_login_for_every_namespace,
    test_deleted_or_edited_secret_is_restored_and_a_restart_makes_no_login,
    test_namespaces_that_start_or_stop_matching_gain_or_lose_the_secret_within_seconds,
    test_no_secret_material_in_logs_events_or_status,
    test_one_login_serves_every_selected_namespace,
    test_refresh_requested_annotation_gives_every_namespace_one_new_token,
    test_secret_template_data_is_written_in_every_selected_namespace,
    test_secret_template_data_over_the_render_bound_is_invalid_spec,
)
from tests.integration.test_cluster_credential import cluster_operator as cluster_operator
from tests.integration.test_cluster_credential import fleet as fleet

__all__ = [
    "test_a_credentials_secret_outside_the_cluster_credentials_namespace_is_invalid_spec",
    "test_a_foreign_secret_in_one_namespace_is_listed_while_the_others_are_served",
    "test_a_rotated_password_is_one_new_login_for_every_namespace",
    "test_deleted_or_edited_secret_is_restored_and_a_restart_makes_no_login",
    "test_namespaces_that_start_or_stop_matching_gain_or_lose_the_secret_within_seconds",
    "test_no_secret_material_in_logs_events_or_status",
    "test_one_login_serves_every_selected_namespace",
    "test_refresh_requested_annotation_gives_every_namespace_one_new_token",
    "test_secret_template_data_is_written_in_every_selected_namespace",
    "test_secret_template_data_over_the_render_bound_is_invalid_spec",
]

HOLD = "auth.simacan.com/test-hold"


def test_deleting_it_garbage_collects_the_secret_in_every_namespace(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess]
) -> None:
    namespaces, _, _ = served_in_three_namespaces(fleet, fake_auth, cluster_operator)

    fleet.delete()
    # The garbage collector learns of a new CRD's objects at its next discovery resync (30 s).
    eventually(
        lambda: all(ns.secret(SECRET) is None for ns in namespaces),
        timeout=120,
        what="every token Secret garbage-collected",
    )
    assert fleet.platform.secret("login") is not None, "the credentials Secret is not ours to delete"


def test_a_terminating_namespace_is_no_longer_served(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess]
) -> None:
    kept, leaving = fleet.namespace(), fleet.namespace()
    fleet.create(fake_auth)
    cluster_operator()
    all_served(fleet, [kept, leaving])
    core = client.CoreV1Api(fleet.api)
    body: Any = {"metadata": {"name": "held", "finalizers": [HOLD]}}
    core.create_namespaced_config_map(leaving.name, body)  # keeps the namespace Terminating
    try:
        core.delete_namespace(leaving.name)
        eventually(lambda: fleet.status().get("namespaces") == 1, what="a Terminating namespace skipped")
        assert fleet.ready() == ("True", "TokenValid")
        assert kept.secret_text(SECRET, "token")
    finally:
        core.patch_namespaced_config_map("held", leaving.name, {"metadata": {"finalizers": None}})
