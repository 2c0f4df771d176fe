"""Deleting a SimacanCredential removes its token Secret through the real garbage collector."""

from __future__ import annotations

from localenv.k8s import Namespace
from localenv.polling import eventually
from tests.conftest import Issue


def test_deleting_the_credential_garbage_collects_its_secret_but_not_the_login(
    ns: Namespace, issue: Issue
) -> None:
    issue()

    ns.delete_credential("fleet-api")
    # The garbage collector picks up a new CRD's objects at its next discovery resync (every
    # 30 s), so right after installation this can take most of a minute.
    eventually(lambda: ns.secret("fleet-api") is None, timeout=120, what="token Secret garbage-collected")
    assert ns.secret("login") is not None, "the user's credentials Secret is not ours to delete"
