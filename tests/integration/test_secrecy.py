"""Passwords and tokens never appear in logs, Events or status, at any log level."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable

from localenv.fakeauth import FakeAuthAPI, Fault
from localenv.k8s import Namespace
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually
from tests.conftest import PASSWORD, USERNAME, credential_spec

StartOperator = Callable[..., OperatorProcess]


def test_no_secret_material_in_logs_events_or_status_through_a_full_cycle(
    ns: Namespace, fake_auth: FakeAuthAPI, start_operator: StartOperator
) -> None:
    fake_auth.access_lifetime = 3
    ns.create_login_secret("login", USERNAME, PASSWORD)
    ns.create_credential("fleet-api", credential_spec(fake_auth))
    operator = start_operator()  # runs at --log-level debug
    ns.ready_token("fleet-api")
    fake_auth.wait_for_calls(1, endpoint="refresh", status=200, timeout=10)

    # Failures of every kind, each of which produces log lines, Events and status messages.
    fake_auth.fail_next("refresh", Fault.http_error(500))
    fake_auth.wait_for_calls(1, endpoint="refresh", status=500, timeout=10)
    fake_auth.revoke_refresh_tokens()
    fake_auth.wait_for_calls(2, endpoint="password", status=200, timeout=15)
    fake_auth.set_password(USERNAME, "second-password-e81f")
    ns.set_secret_data("login", password="wrong-password-5c0a")
    eventually(
        lambda: (
            ns.ready_reason("fleet-api") in {("True", "InvalidCredentials"), ("False", "InvalidCredentials")}
        ),
        what="401",
    )
    fake_auth.set_fault("password", Fault.access_token_not_jwt())
    ns.set_secret_data("login", password="second-password-e81f")
    eventually(lambda: (ns.ready_reason("fleet-api") or ("", ""))[1] == "MalformedResponse", what="malformed")
    fake_auth.set_fault("password", None)
    ns.patch_credential(
        "fleet-api", {"metadata": {"annotations": {"auth.simacan.com/refresh-requested-at": "now"}}}
    )
    eventually(lambda: ns.ready_reason("fleet-api") == ("True", "TokenValid"), timeout=20, what="recovered")
    operator.stop()

    secrets = fake_auth.secret_strings() | {PASSWORD, "wrong-password-5c0a", "second-password-e81f"}
    assert len([s for s in secrets if s.count(".") == 2]) >= 6, "the cycle issued several JWT pairs"
    logs = operator.logs()
    assert "DEBUG" in logs, "the operator ran at debug level"
    published = json.dumps([ns.events(), ns.credential("fleet-api").get("status")])
    for secret in secrets:
        assert secret not in logs, "secret material in the operator's logs"
        assert secret not in published, "secret material in Events or status"


def _with_base64(secrets: Iterable[str]) -> set[str]:
    """Each secret, and its base64 form: Secret data travels base64-encoded, and a client that logs
    response bodies would log it that way."""
    found = set(secrets)
    found |= {base64.b64encode(secret.encode()).decode() for secret in found}
    return found


def test_response_headers_that_set_cookies_or_echo_the_password_never_reach_a_debug_log(
    ns: Namespace, fake_auth: FakeAuthAPI, start_operator: StartOperator
) -> None:
    """HTTP libraries log headers at DEBUG; a server that echoes the form would put the password there."""
    fake_auth.access_lifetime = 3
    fake_auth.set_fault("password", Fault.echo())
    fake_auth.set_fault("refresh", Fault.echo())
    ns.create_login_secret("login", USERNAME, PASSWORD)
    ns.create_credential("fleet-api", credential_spec(fake_auth))
    operator = start_operator()  # runs at --log-level debug
    ns.ready_token("fleet-api")
    fake_auth.wait_for_calls(1, endpoint="refresh", status=200, timeout=10)
    operator.stop()

    secrets = _with_base64(fake_auth.secret_strings() | {PASSWORD})
    cookies = [s for s in fake_auth.secret_strings() if len(s) == 32 and s.isalnum()]
    assert len(cookies) >= 2, "the fake set a cookie on the login and on the refresh"
    logs = operator.logs()
    assert "DEBUG" in logs, "the operator ran at debug level"
    leaked = sorted(secret[:6] + "..." for secret in secrets if secret in logs)
    assert not leaked, f"secret material in the operator's debug log: {leaked}"
    assert "X-Echo" not in logs and "set-cookie" not in logs.lower(), "response headers were logged"
