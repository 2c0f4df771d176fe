"""No tenant drains a shared account (issue 21, item 1), with the operator as a process.

One namespace selected by a ClusterSimacanCredential edits its token Secret's annotations 100
times, puts 100 self-made tokens (expired or about to expire) into it and deletes it 20 times,
all within a minute. Once the operator holds a token none of that is an Auth API call (at most
one after a restart), and once the tenant stops, the Secret holds the operator's token again.
Tokens live an hour here, so nothing is legitimately due during the test.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes.client.exceptions import ApiException

from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import Namespace
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually
from simacan_token_operator.reconcile.tokensecret import (
    EXPIRES_AT_ANNOTATION,
    REFRESHED_AT_ANNOTATION,
    rfc3339_precise,
)
from tests.conftest import PASSWORD, USERNAME
from tests.integration.test_cluster_credential import (
    SECRET,
    Fleet,
    cluster_operator,
    fleet,
    served_in_three_namespaces,
)

FIXTURES = (cluster_operator, fleet)


@pytest.fixture
def fake_auth(signing_key: rsa.RSAPrivateKey) -> Iterator[FakeAuthAPI]:
    """The stand-in Auth API issuing one-hour tokens, as Simacan does."""
    with FakeAuthAPI({USERNAME: PASSWORD}, access_lifetime=3600, signing_key=signing_key, tls=True) as fake:
        yield fake


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def self_made(exp: float) -> str:
    return jwt.encode(
        {"exp": int(exp), "iat": int(time.time()), "sub": "tenant"}, "t" * 32, algorithm="HS256"
    )


def attack(tenant: Namespace, rounds: int = 100, deletions: int = 20) -> None:
    """The tenant's edits, as fast as the API server takes them; a 404 is a Secret not yet restored."""
    core = tenant.core

    def patch(body: dict[str, Any]) -> None:
        try:
            core.patch_namespaced_secret(SECRET, tenant.name, body)
        except ApiException as error:
            if error.status != 404:
                raise

    for i in range(rounds):
        now = time.time()
        expires = now + 1 if i % 2 else now + 3599  # due at once, or "valid" longer than ours
        annotations = {
            EXPIRES_AT_ANNOTATION: rfc3339_precise(expires),
            REFRESHED_AT_ANNOTATION: rfc3339_precise(now - 7200),
        }
        patch({"metadata": {"annotations": annotations}})
        patch({"data": {"token": b64(self_made(now - 60 if i % 2 else now + 5))}})
        if i % (rounds // deletions) == 0:
            try:
                tenant.delete_secret(SECRET)
            except ApiException as error:
                if error.status != 404:
                    raise


def operators_token(tenant: Namespace) -> bool:
    """The Secret holds a token the fake Auth API issued (RS256), not a self-made one (HS256)."""
    text = tenant.secret_text(SECRET, "token")
    return text is not None and jwt.get_unverified_header(text).get("alg") == "RS256"


def holds(tenant: Namespace, token: str) -> bool:
    return tenant.secret_text(SECRET, "token") == token


def test_a_tenant_cannot_make_the_shared_account_log_in(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess]
) -> None:
    namespaces, operator, token = served_in_three_namespaces(fleet, fake_auth, cluster_operator)
    tenant = namespaces[1]
    assert fake_auth.count() == 1
    fake_auth.reset_counts()

    started = time.monotonic()
    attack(tenant)
    took = time.monotonic() - started
    assert took < 60, f"the attack took {took:.0f}s, not within a minute"
    # Restores back off per Secret (up to 5 minutes); after a few seconds of edits, well below that.
    eventually(lambda: holds(tenant, token), timeout=120, what="the operator's token restored")
    assert fake_auth.calls == [], "no Auth API call for anything the tenant did"
    assert all(holds(ns, token) for ns in namespaces), "the other namespaces kept the token"

    operator.restart()  # a restart forgets the pool: the Secrets' tokens are adopted per namespace
    eventually(
        lambda: operator.metric("simacan_credential_ready", namespace="", name=fleet.name) == 1,
        what="looked at after the restart",
    )
    attack(tenant, rounds=20, deletions=4)
    # The pool was empty: restoring the tenant's Secret may cost one login, whose token it then
    # holds; the other namespaces keep the token they adopted until it is due.
    eventually(lambda: operators_token(tenant), timeout=120, what="a token the operator obtained, restored")
    assert fake_auth.count() <= 1, "at most one login after a restart"
    assert all(holds(ns, token) for ns in namespaces if ns is not tenant), "the others kept theirs"
