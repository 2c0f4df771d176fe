"""Issuing and refreshing: what a workload reading the token Secret relies on."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

import jwt

from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import Namespace
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually, stays
from tests.conftest import PASSWORD, USERNAME, Issue, credential_spec

StartOperator = Callable[..., OperatorProcess]


def test_creates_token_secret_that_a_workload_can_read(
    ns: Namespace, fake_auth: FakeAuthAPI, start_operator: StartOperator
) -> None:
    ns.create_login_secret("login", USERNAME, PASSWORD)
    created = ns.create_credential(
        "fleet-api",
        credential_spec(
            fake_auth, secretTemplate={"labels": {"team": "routing"}, "annotations": {"owner": "ops"}}
        ),
    )
    start_operator()

    token = ns.ready_token("fleet-api")
    secret = ns.secret("fleet-api")
    assert secret is not None
    assert secret["type"] == "Opaque"
    assert set(secret["data"]) == {"token", "token_type", "expires_at"}, "no refresh token for workloads"
    assert ns.secret_text("fleet-api", "token_type") == "Bearer"
    claims = jwt.decode(token, fake_auth.public_key_pem, algorithms=["RS256"], audience="auth-api")
    expires_at = ns.secret_text("fleet-api", "expires_at")
    assert expires_at is not None
    # Expiry is the earlier of `exp` and send time + expires_in, shown in whole seconds rounded
    # down: never after `exp`, and at most a second or two before it (which second is chance).
    shown = datetime.datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp()
    assert 0 <= claims["exp"] - shown <= 2

    meta = secret["metadata"]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "simacan-token-operator"
    assert meta["labels"]["team"] == "routing"
    assert meta["annotations"]["owner"] == "ops"
    # The annotation keeps milliseconds for scheduling after a restart; the data key whole seconds.
    assert meta["annotations"]["auth.simacan.com/expires-at"][:19] == expires_at[:19]
    [owner] = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "SimacanCredential",
        "fleet-api",
        created["metadata"]["uid"],
        True,
    )

    status = ns.credential("fleet-api")["status"]
    assert status["secretName"] == "fleet-api"
    assert status["expiresAt"] == expires_at
    assert status["subject"] == USERNAME
    assert status["observedGeneration"] == created["metadata"]["generation"]
    assert status["refreshedAt"] <= status["nextRefreshAt"] < status["expiresAt"]
    assert token not in str(status)
    assert fake_auth.count("password") == 1
    assert "Issued" in ns.event_reasons("fleet-api")


def test_refreshes_before_expiry_again_and_again(ns: Namespace, fake_auth: FakeAuthAPI, issue: Issue) -> None:
    """With 6 s tokens, a reader polling the Secret never sees an expired token across several refreshes."""
    fake_auth.access_lifetime = 6
    issue()

    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while len(seen) < 4 and time.monotonic() < deadline:
        token = ns.secret_text("fleet-api", "token")
        assert token
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        assert exp > time.time(), "the Secret held an expired token"
        seen.add(token)
        time.sleep(0.2)
    assert len(seen) >= 4, f"saw only {len(seen)} distinct tokens"
    assert fake_auth.count("password") == 1, "refreshes use the refresh token, not the password"
    assert fake_auth.count("refresh") >= 3


def test_falls_back_to_password_login_when_refresh_is_rejected(
    ns: Namespace, fake_auth: FakeAuthAPI, issue: Issue
) -> None:
    fake_auth.access_lifetime = 3
    first = issue().token
    fake_auth.revoke_refresh_tokens()

    fake_auth.wait_for_calls(1, endpoint="refresh", status=400, timeout=10)
    fake_auth.wait_for_calls(2, endpoint="password", status=200, timeout=10)
    eventually(lambda: ns.secret_text("fleet-api", "token") not in (None, first), what="a new token")
    assert ns.ready_reason("fleet-api") == ("True", "TokenValid")


def test_restart_makes_no_login_while_token_valid(
    ns: Namespace, fake_auth: FakeAuthAPI, start_operator: StartOperator
) -> None:
    for i in range(3):
        ns.create_credential(f"cred-{i}", credential_spec(fake_auth, secret=f"login-{i}"))
        ns.create_login_secret(f"login-{i}", f"user-{i}@example.com", PASSWORD)
        fake_auth.add_user(f"user-{i}@example.com", PASSWORD)
    operator = start_operator()
    before = {f"cred-{i}": ns.ready_token(f"cred-{i}") for i in range(3)}
    for name in before:  # the stale-consumer check reports a moment after the first token
        eventually(
            lambda: "staleConsumerCount" in ns.credential(name).get("status", {}),  # noqa: B023
            what=f"{name}'s status complete",
        )
    versions = {name: ns.secret(name)["metadata"]["resourceVersion"] for name in before}  # type: ignore[index]
    status_before = {name: ns.credential(name)["status"] for name in before}
    fake_auth.reset_counts()

    operator.restart()

    # The metric shows each worker has looked at its credential since the restart.
    def reconciled(name: str) -> bool:
        return operator.metric("simacan_credential_ready", namespace=ns.name, name=name) == 1

    for name in before:
        eventually(lambda: reconciled(name), what=f"{name} reconciled after restart")  # noqa: B023
    assert fake_auth.calls == [], "a restart with valid tokens must not call the Auth API"
    for name, token in before.items():
        assert ns.secret_text(name, "token") == token
        assert ns.secret(name)["metadata"]["resourceVersion"] == versions[name]  # type: ignore[index]
        assert ns.credential(name)["status"] == status_before[name], "nor rewrites the status"


def test_restart_refreshes_from_the_stored_expiry(
    ns: Namespace, fake_auth: FakeAuthAPI, issue: Issue
) -> None:
    """After a restart the refresh token is gone from memory: the next refresh is one password login."""
    fake_auth.access_lifetime = 4
    issued = issue()
    issued.operator.restart()
    fake_auth.reset_counts()
    eventually(
        lambda: ns.secret_text("fleet-api", "token") != issued.token, timeout=10, what="refresh after restart"
    )
    assert fake_auth.count("password") == 1
    assert fake_auth.count("refresh") == 0


def test_equal_credentials_share_one_login(
    ns: Namespace, fake_auth: FakeAuthAPI, start_operator: StartOperator
) -> None:
    fake_auth.access_lifetime = 5
    ns.create_login_secret("login", USERNAME, PASSWORD)
    ns.create_login_secret("login-copy", USERNAME, PASSWORD)
    names = [f"team-{i}" for i in range(6)]
    for i, name in enumerate(names):
        ns.create_credential(name, credential_spec(fake_auth, secret="login" if i % 2 else "login-copy"))
    start_operator()
    tokens = {name: ns.ready_token(name) for name in names}
    assert len(set(tokens.values())) == 1
    assert fake_auth.count("password") == 1

    # One token lifetime later, still one Auth API call per lifetime, not one per credential.
    eventually(
        lambda: (
            len({ns.secret_text(n, "token") for n in names} - set(tokens.values())) == 1
            and all(ns.secret_text(n, "token") != tokens[n] for n in names)
        ),
        timeout=15,
        what="every credential refreshed",
    )
    assert fake_auth.count() == 2, f"expected one login and one refresh, saw {fake_auth.calls}"


def test_deleting_the_credential_stops_its_refreshes_and_metrics(
    ns: Namespace, fake_auth: FakeAuthAPI, issue: Issue
) -> None:
    fake_auth.access_lifetime = 3
    operator = issue().operator
    assert operator.metric("simacan_token_expiry_timestamp_seconds", namespace=ns.name, name="fleet-api")

    ns.delete_credential("fleet-api")
    eventually(
        lambda: operator.metric("simacan_credential_ready", namespace=ns.name, name="fleet-api") is None,
        what="series removed",
    )
    calls = fake_auth.count()
    # Longer than a token lifetime: a live worker would have refreshed by now.
    stays(lambda: fake_auth.count() == calls, 4, what="no Auth API calls after deletion")
