"""Two replicas, one active: when the active one goes, the standby takes over and keeps refreshing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from kubernetes import client

from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import Namespace
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually
from tests.conftest import PASSWORD, USERNAME, credential_spec
from tests.e2e.conftest import OPERATOR_NAMESPACE


@pytest.mark.parametrize("how", ["graceful-stop", "crash"])
def test_standby_takes_over_and_keeps_refreshing(
    ns: Namespace, fake_auth: FakeAuthAPI, start_operator: Callable[..., OperatorProcess], how: str
) -> None:
    fake_auth.access_lifetime = 6
    lease_name = f"test-{uuid.uuid4().hex[:8]}"
    args = ("--leader-election-namespace", OPERATOR_NAMESPACE, "--leader-election-id", lease_name)
    leases = client.CoordinationV1Api(ns.api)

    def holder() -> str | None:
        try:
            spec = leases.read_namespaced_lease(lease_name, OPERATOR_NAMESPACE).spec
        except client.exceptions.ApiException:
            return None
        return spec.holder_identity if spec else None

    first = start_operator(*args)
    eventually(holder, what="first replica holds the Lease")
    second = start_operator(*args)
    assert holder() is not None and holder().endswith(f"-{first.pid}")  # type: ignore[union-attr]

    ns.create_login_secret("login", USERNAME, PASSWORD)
    ns.create_credential("fleet-api", credential_spec(fake_auth))
    ns.ready_token("fleet-api")
    calls_before = fake_auth.count()

    stopped_at = time.monotonic()
    if how == "crash":
        first.kill()
    else:
        first_identity = f"-{first.pid}"
        assert first.stop() == 0
        # A clean stop hands the Lease over before the process exits, so the standby need not wait it out.
        assert not (holder() or "").endswith(first_identity), "the stopped leader exited holding the Lease"
    eventually(
        lambda: (holder() or "").endswith(f"-{second.pid}"), timeout=30, what="standby holds the Lease"
    )
    takeover = time.monotonic() - stopped_at
    print(f"takeover after {how}: {takeover:.1f}s")

    # The new leader keeps refreshing: two more tokens after the takeover.
    after = fake_auth.count()
    eventually(
        lambda: fake_auth.count(status=200) >= after + 2, timeout=20, what="refreshes by the new leader"
    )
    ns.ready_token("fleet-api")
    assert fake_auth.count() > calls_before
