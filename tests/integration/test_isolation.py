"""One tenant's slow Auth API never delays another tenant's token."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from localenv.fakeauth import FakeAuthAPI, Fault
from localenv.k8s import Namespace
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually
from tests.conftest import PASSWORD, SUMMARY, USERNAME, credential_spec

SLOW_TENANTS = 20


@pytest.fixture
def dripping_auth(signing_key: rsa.RSAPrivateKey) -> Iterator[FakeAuthAPI]:
    """A second Auth API that answers one byte every 2 s: no single read ever times out."""
    users = {f"slow-{i}@example.com": f"pw-{i}" for i in range(SLOW_TENANTS)}
    with FakeAuthAPI(users, tls=True, signing_key=signing_key) as fake:
        fake.set_fault("password", Fault.drip(2.0))
        yield fake


def test_a_healthy_credential_is_served_while_twenty_others_wait_on_a_dripping_auth_api(
    ns: Namespace,
    fake_auth: FakeAuthAPI,
    dripping_auth: FakeAuthAPI,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    for i in range(SLOW_TENANTS):
        ns.create_login_secret(f"slow-login-{i}", f"slow-{i}@example.com", f"pw-{i}")
        ns.create_credential(f"slow-{i}", credential_spec(dripping_auth, secret=f"slow-login-{i}"))
    start_operator(
        "--allowed-auth-host",
        f"127.0.0.1:{dripping_auth.port}",
        "--auth-ca-file",
        str(dripping_auth.ca_file),
    )
    eventually(lambda: dripping_auth.count() >= SLOW_TENANTS, timeout=30, what="every slow login under way")

    ns.create_login_secret("login", USERNAME, PASSWORD)
    ns.create_credential("fleet-api", credential_spec(fake_auth))
    started = time.monotonic()
    ns.ready_token("fleet-api")
    took = time.monotonic() - started
    SUMMARY.append(
        f"isolation: healthy credential Ready {took:.1f}s after creation, {SLOW_TENANTS} on a dripping API"
    )

    assert took < 2 * 3, f"the healthy credential waited {took:.1f}s"  # the promise is 2 s; CI load margin
    assert all(ns.ready_reason(f"slow-{i}") != ("True", "TokenValid") for i in range(SLOW_TENANTS))
