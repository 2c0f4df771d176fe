"""Metrics a platform team alerts on, and probes kubelet uses."""

from __future__ import annotations

import time
from collections.abc import Callable

from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import Namespace
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually
from tests.conftest import PASSWORD, USERNAME, credential_spec


def test_metrics_expose_expiry_next_refresh_readiness_and_auth_api_calls(
    ns: Namespace, fake_auth: FakeAuthAPI, start_operator: Callable[..., OperatorProcess]
) -> None:
    fake_auth.access_lifetime = 3
    ns.create_login_secret("login", USERNAME, PASSWORD)
    ns.create_credential("fleet-api", credential_spec(fake_auth))
    ns.create_credential("broken", credential_spec(fake_auth, secret="missing"))
    operator = start_operator()
    ns.ready_token("fleet-api")
    fake_auth.wait_for_calls(1, endpoint="refresh", status=200, timeout=10)
    labels = {"namespace": ns.name, "name": "fleet-api"}

    expiry = operator.metric("simacan_token_expiry_timestamp_seconds", **labels)
    next_refresh = operator.metric("simacan_token_next_refresh_timestamp_seconds", **labels)
    assert expiry and next_refresh and time.time() < next_refresh < expiry
    assert operator.metric("simacan_credential_ready", **labels) == 1
    eventually(
        lambda: operator.metric("simacan_credential_ready", namespace=ns.name, name="broken") == 0,
        what="broken credential reported not ready",
    )
    eventually(
        lambda: (operator.metric("simacan_token_refresh_attempts_total", result="success") or 0) >= 2,
        what="successful refreshes counted",
    )
    assert (
        operator.metric("simacan_auth_api_request_duration_seconds_count", endpoint="password", status="ok")
        == 1
    )
    assert (
        operator.metric("simacan_auth_api_request_duration_seconds_count", endpoint="refresh", status="ok")
        or 0
    ) >= 1
    assert operator.healthz().status_code == 200
