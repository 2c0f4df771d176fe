"""How the operator treats the Kubernetes objects around a credential."""

from __future__ import annotations

import time
from collections.abc import Callable

from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import Namespace
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually, stays
from tests.conftest import PASSWORD, USERNAME, Issue, credential_spec

StartOperator = Callable[..., OperatorProcess]


def test_foreign_secret_with_the_target_name_is_never_modified(
    ns: Namespace, fake_auth: FakeAuthAPI, start_operator: StartOperator
) -> None:
    foreign = ns.create_secret("fleet-api", token="someone-else's")
    version = foreign["metadata"]["resourceVersion"]
    ns.create_login_secret("login", USERNAME, PASSWORD)
    ns.create_credential("fleet-api", credential_spec(fake_auth))
    start_operator()

    eventually(lambda: ns.ready_reason("fleet-api") == ("False", "SecretConflict"), what="SecretConflict")
    message = ns.ready("fleet-api")["message"]  # type: ignore[index]
    assert "fleet-api" in message and "spec.secretName" in message
    assert "SecretConflict" in ns.event_reasons("fleet-api")
    assert ns.secret("fleet-api")["metadata"]["resourceVersion"] == version  # type: ignore[index]
    assert ns.secret_text("fleet-api", "token") == "someone-else's"
    assert fake_auth.count() == 0, "no login while there is nowhere to put the token"

    ns.delete_secret("fleet-api")
    ns.ready_token("fleet-api")


def test_password_rotation_logs_in_again_within_seconds(
    ns: Namespace, fake_auth: FakeAuthAPI, issue: Issue
) -> None:
    first = issue().token

    fake_auth.set_password(USERNAME, "rotated-password-91c2")
    ns.set_secret_data("login", password="rotated-password-91c2")
    started = time.monotonic()
    eventually(lambda: ns.secret_text("fleet-api", "token") != first, timeout=10, what="new token")
    assert time.monotonic() - started < 5
    assert fake_auth.count("password", status=200) == 2
    assert "PasswordChanged" in ns.event_reasons("fleet-api")


def test_missing_credentials_secret_is_named_and_picked_up_when_created(
    ns: Namespace, fake_auth: FakeAuthAPI, start_operator: StartOperator
) -> None:
    ns.create_credential("fleet-api", credential_spec(fake_auth))
    start_operator()
    eventually(
        lambda: ns.ready_reason("fleet-api") == ("False", "CredentialsSecretNotFound"), what="not found"
    )
    assert f"Secret {ns.name}/login" in ns.ready("fleet-api")["message"]  # type: ignore[index]
    assert "CredentialsSecretNotFound" in ns.event_reasons("fleet-api")

    ns.create_secret("login", username=USERNAME)
    eventually(lambda: ns.ready_reason("fleet-api") == ("False", "CredentialsKeyMissing"), what="key missing")
    message = ns.ready("fleet-api")["message"]  # type: ignore[index]
    assert "'password'" in message and "passwordKey" in message

    ns.set_secret_data("login", password=PASSWORD)
    ns.ready_token("fleet-api")
    assert "Recovered" in ns.event_reasons("fleet-api")


def test_custom_secret_keys_are_read(
    ns: Namespace, fake_auth: FakeAuthAPI, start_operator: StartOperator
) -> None:
    ns.create_secret("login", user=USERNAME, **{"pass": PASSWORD})
    ns.create_credential(
        "fleet-api",
        {
            **credential_spec(fake_auth),
            "credentialsSecretRef": {"name": "login", "usernameKey": "user", "passwordKey": "pass"},
        },
    )
    start_operator()
    ns.ready_token("fleet-api")


def test_deleted_or_edited_token_secret_is_restored_without_a_login(
    ns: Namespace, fake_auth: FakeAuthAPI, issue: Issue
) -> None:
    token = issue().token

    ns.delete_secret("fleet-api")
    eventually(lambda: ns.secret_text("fleet-api", "token") == token, timeout=5, what="Secret re-created")

    ns.set_secret_data("fleet-api", token="garbage", token_type="Basic")
    eventually(
        lambda: (
            ns.secret_text("fleet-api", "token") == token
            and ns.secret_text("fleet-api", "token_type") == "Bearer"
        ),
        timeout=5,
        what="Secret restored",
    )

    ns.core.patch_namespaced_secret(
        "fleet-api", ns.name, {"metadata": {"labels": {"app.kubernetes.io/managed-by": "me"}}}
    )
    eventually(
        lambda: (
            ns.secret("fleet-api")["metadata"]["labels"]["app.kubernetes.io/managed-by"]  # type: ignore[index]
            == "simacan-token-operator"
        ),
        timeout=5,
        what="label restored",
    )
    assert fake_auth.count() == 1, "restoring the Secret reuses the token held in memory"


def test_spec_changes_take_effect_immediately(ns: Namespace, issue: Issue) -> None:
    token = issue().token

    ns.patch_credential(
        "fleet-api", {"spec": {"secretName": "renamed", "secretTemplate": {"labels": {"tier": "gold"}}}}
    )
    eventually(lambda: ns.secret_text("renamed", "token") == token, timeout=5, what="new Secret")
    assert ns.secret("renamed")["metadata"]["labels"]["tier"] == "gold"  # type: ignore[index]
    eventually(lambda: ns.credential("fleet-api")["status"].get("secretName") == "renamed", what="status")
    generation = ns.credential("fleet-api")["metadata"]["generation"]
    eventually(
        lambda: ns.credential("fleet-api")["status"]["observedGeneration"] == generation, what="observed"
    )


def test_suspend_stops_refreshing_and_keeps_the_secret(
    ns: Namespace, fake_auth: FakeAuthAPI, issue: Issue
) -> None:
    fake_auth.access_lifetime = 3
    issue()

    ns.patch_credential("fleet-api", {"spec": {"suspend": True}})
    eventually(lambda: (ns.ready_reason("fleet-api") or ("", ""))[1] == "Suspended", what="Suspended")
    calls = fake_auth.count()
    token = ns.secret_text("fleet-api", "token")
    eventually(
        lambda: ns.ready_reason("fleet-api") == ("False", "Suspended"),
        timeout=6,
        what="Ready=False once the kept token expires",
    )
    assert fake_auth.count() == calls
    assert ns.secret_text("fleet-api", "token") == token, "suspending keeps the Secret as it is"

    ns.patch_credential("fleet-api", {"spec": {"suspend": False}})
    eventually(lambda: ns.secret_text("fleet-api", "token") != token, what="refreshing again")


def test_refresh_requested_annotation_forces_a_new_token(
    ns: Namespace, fake_auth: FakeAuthAPI, issue: Issue
) -> None:
    first = issue().token

    stamp = "2026-11-28T10:00:00Z"
    ns.patch_credential(
        "fleet-api", {"metadata": {"annotations": {"auth.simacan.com/refresh-requested-at": stamp}}}
    )
    eventually(lambda: ns.secret_text("fleet-api", "token") != first, timeout=5, what="forced refresh")
    eventually(
        lambda: ns.credential("fleet-api")["status"].get("lastRefreshRequest") == stamp, what="recorded"
    )
    calls = fake_auth.count()
    assert "RefreshRequested" in ns.event_reasons("fleet-api")
    stays(lambda: fake_auth.count() == calls, 1.5, what="the same annotation value is handled once")
