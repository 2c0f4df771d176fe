"""Rollout restarts against the real API server: with the opt-in component (manifests/components/
rollout-restarts) the fast tier's scenario restarts the target; without it (the default install) the
target is reported RestartNotPermitted while the token is kept fresh."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import Namespace
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually
from tests.conftest import PASSWORD, USERNAME, credential_spec
from tests.e2e.components import RESTARTS, granted, rollout_restarts
from tests.integration.test_consumers import create_deployment, restarted_at
from tests.integration.test_consumers import (
    test_restart_target_restarts_once_per_new_token_and_not_on_operator_restart as restart_scenario,
)
from tests.support.cluster import ClusterHandle

__all__ = ["rollout_restarts"]  # the fixture, used below

TOKEN_ENV = {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "fleet-api", "key": "token"}}}]}


def test_restart_target_restarts_once_per_new_token_and_not_on_operator_restart(
    ns: Namespace,
    fake_auth: FakeAuthAPI,
    start_operator: Callable[..., OperatorProcess],
    rollout_restarts: None,
) -> None:
    restart_scenario(ns, fake_auth, start_operator)
    condition = rollout_condition(ns)
    assert condition is not None and (condition["status"], condition["reason"]) == (
        "True",
        "RestartsPermitted",
    )


def rollout_condition(ns: Namespace) -> dict[str, Any] | None:
    conditions = ns.credential("fleet-api").get("status", {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "RolloutRestarts"), None)


def test_without_the_component_a_restart_target_is_not_permitted_and_the_token_still_refreshes(
    cluster: ClusterHandle,
    ns: Namespace,
    fake_auth: FakeAuthAPI,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    assert not RESTARTS & granted(cluster, ns.name), "the default install"
    fake_auth.access_lifetime = 6  # a new token every 4 s: each makes the target due again
    create_deployment(ns, "app", **TOKEN_ENV)
    ns.create_login_secret("login", USERNAME, PASSWORD)
    spec = credential_spec(
        fake_auth, rolloutRestartTargets=[{"kind": "Deployment", "name": "app"}], minRestartInterval="1m"
    )
    ns.create_credential("fleet-api", spec)
    start_operator()

    condition = eventually(
        lambda: (c := rollout_condition(ns)) and c["status"] == "False" and c,
        timeout=30,
        what="RolloutRestarts False",
    )
    assert condition["reason"] == "RestartNotPermitted"
    assert "not permitted (HTTP 403): patch Deployment/app;" in condition["message"]
    assert "manifests/components/rollout-restarts" in condition["message"]
    tokens = {ns.secret_text("fleet-api", "token")}

    def new_token() -> bool:
        token = ns.secret_text("fleet-api", "token")
        fresh = token is not None and token not in tokens
        tokens.add(token)
        return fresh

    for _ in range(2):  # two refreshes, each with the target due again
        eventually(new_token, timeout=20, what="a new token")

    assert ns.ready_reason("fleet-api") == ("True", "TokenValid")
    assert restarted_at(ns, "app") is None
    assert rollout_condition(ns) == condition, "unchanged through the refreshes"
    warnings = [e for e in ns.events("fleet-api") if e["reason"] == "RestartNotPermitted"]
    assert [(e["type"], e.get("count") or 1) for e in warnings] == [("Warning", 1)]
    assert warnings[0]["message"] == condition["message"]
