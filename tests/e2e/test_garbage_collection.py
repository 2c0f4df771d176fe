"""Deleting a SimacanCredential removes its token Secret through the real garbage collector."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import PASSWORD, USERNAME, credential_spec
from tests.integration.test_issuing import ready_token
from tests.support.fakeauth import FakeAuthAPI
from tests.support.k8s import Namespace
from tests.support.operator_process import OperatorProcess
from tests.support.polling import eventually


def test_deleting_the_credential_garbage_collects_its_secret_but_not_the_login(
    ns: Namespace, auth: FakeAuthAPI, start_operator: Callable[..., OperatorProcess]
) -> None:
    ns.create_login_secret("login", USERNAME, PASSWORD)
    ns.create_credential("fleet-api", credential_spec(auth))
    start_operator()
    ready_token(ns, "fleet-api")

    ns.delete_credential("fleet-api")
    eventually(lambda: ns.secret("fleet-api") is None, timeout=30, what="token Secret garbage-collected")
    assert ns.secret("login") is not None, "the user's credentials Secret is not ours to delete"
