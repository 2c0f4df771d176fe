"""What the workloads that consume the token need: ready-made keys, restarts, stale-consumer warnings."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import Namespace
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually, stays
from simacan_token_operator.controller.workloads import PAGE_SIZE
from simacan_token_operator.reconcile.tokensecret import parse_rfc3339
from tests.conftest import PASSWORD, USERNAME, Issue, credential_spec

RESTARTED_AT = "auth.simacan.com/restartedAt"


def create_deployment(ns: Namespace, name: str, **container: Any) -> None:
    labels = {"app": name}
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "busybox", **container}]},
            },
        },
    }
    client.AppsV1Api(ns.api).create_namespaced_deployment(ns.name, body)  # type: ignore[arg-type]


def restarted_at(ns: Namespace, name: str) -> str | None:
    deployment = client.AppsV1Api(ns.api).read_namespaced_deployment(name, ns.name)
    annotations = deployment.spec.template.metadata.annotations or {}  # type: ignore[union-attr]
    value = annotations.get(RESTARTED_AT)
    return value if isinstance(value, str) else None


def test_extra_keys_hold_the_token_in_the_shape_a_client_wants(ns: Namespace, issue: Issue) -> None:
    token = issue(secretTemplate={"data": {"authorization": "Bearer {{ .token }}"}}).token

    assert ns.secret_text("fleet-api", "authorization") == f"Bearer {token}"
    assert ns.secret_text("fleet-api", "token") == token


def test_restart_target_restarts_once_per_new_token_and_not_on_operator_restart(
    ns: Namespace, fake_auth: FakeAuthAPI, start_operator: Callable[..., OperatorProcess]
) -> None:
    fake_auth.access_lifetime = 6
    token_env = {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "fleet-api", "key": "token"}}}]}
    create_deployment(ns, "app", **token_env)
    ns.create_login_secret("login", USERNAME, PASSWORD)
    ns.create_credential(
        "fleet-api",
        credential_spec(
            fake_auth,
            rolloutRestartTargets=[{"kind": "Deployment", "name": "app"}],
            minRestartInterval="1m",  # the least there is: editing a credential cannot restart at will
        ),
    )
    operator = start_operator()
    first = eventually(lambda: restarted_at(ns, "app"), timeout=15, what="first restart")

    # New tokens every few seconds: the restart they make due waits for minRestartInterval; it
    # is not repeated per token meanwhile.
    tokens: set[str] = set()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        tokens.add(ns.secret_text("fleet-api", "token") or "")
        assert restarted_at(ns, "app") == first, "a restart within minRestartInterval"
        time.sleep(0.2)
    assert len(tokens) >= 2, "the token was refreshed while we watched"

    # With a one-hour token in place, one restart (postponed, never dropped) loads it; an
    # operator restart then changes neither token nor pod template.
    fake_auth.access_lifetime = 3600
    ns.patch_credential(
        "fleet-api", {"metadata": {"annotations": {"auth.simacan.com/refresh-requested-at": "x"}}}
    )
    eventually(
        lambda: ns.credential("fleet-api").get("status", {}).get("lastRefreshRequest") == "x",
        what="1 h token",
    )

    def restarted_for_the_current_token() -> bool:
        restarted = parse_rfc3339(restarted_at(ns, "app"))
        refreshed = parse_rfc3339(ns.credential("fleet-api")["status"]["refreshedAt"])
        return restarted is not None and refreshed is not None and restarted >= refreshed

    eventually(restarted_for_the_current_token, timeout=90, what="the restart for the one-hour token")
    gap = (parse_rfc3339(restarted_at(ns, "app")) or 0.0) - (parse_rfc3339(first) or 0.0)
    assert gap >= 60 - 0.01, f"the second restart came {gap:.1f}s after the first"
    token, before = ns.secret_text("fleet-api", "token"), restarted_at(ns, "app")
    operator.stop()
    operator.start()
    stays(lambda: restarted_at(ns, "app") == before, 3, what="no restart without a new token")
    assert ns.secret_text("fleet-api", "token") == token
    restart_status = ns.credential("fleet-api")["status"]["restarts"]
    assert restart_status[0]["kind"] == "Deployment" and restart_status[0]["name"] == "app"


def test_env_var_consumer_is_warned_about(ns: Namespace, issue: Issue) -> None:
    create_deployment(ns, "env-reader", envFrom=[{"secretRef": {"name": "fleet-api"}}])
    issue()

    def stale() -> dict[str, Any] | None:
        conditions = ns.credential("fleet-api").get("status", {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "ConsumersStale" and c["status"] == "True"), None)

    condition = eventually(stale, timeout=90, what="ConsumersStale")
    assert "Deployment/env-reader" in condition["message"]
    assert "ConsumersStale" in ns.event_reasons("fleet-api")


def test_a_stale_consumer_on_the_last_page_is_found(ns: Namespace, issue: Issue) -> None:
    count = 2 * PAGE_SIZE + 5
    for i in range(count - 1):
        create_deployment(ns, f"app-{i:02}")
    create_deployment(ns, "zz-env-reader", envFrom=[{"secretRef": {"name": "fleet-api"}}])
    operator = issue().operator

    def stale() -> Any:
        return ns.credential("fleet-api").get("status", {}).get("staleConsumers")

    eventually(
        lambda: stale() == ["Deployment/zz-env-reader"], timeout=30, what="the consumer on the last page"
    )
    assert ns.credential("fleet-api")["status"]["staleConsumerCount"] == 1
    assert f"surveyed workloads in {ns.name}: {count} listed in 5 pages" in operator.logs()
