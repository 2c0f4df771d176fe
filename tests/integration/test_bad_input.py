"""Bad spec fields and credentials Secrets, as the user sees them: Ready, its reason and message, Events.

Rows of the "Bad input and how it is handled" table in docs/troubleshooting.md. All rows live side
by side in one namespace served by one operator, next to a good credential: a bad input never hurts
another credential. Only what a user sees is observed (status, Events, the token Secret, Auth API calls).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import Namespace, api_client
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually, stays
from tests.conftest import auth_api_args
from tests.support.cluster import ClusterHandle

pytestmark = pytest.mark.xdist_group("bad-input")
"""With `--dist loadgroup` the rows share one operator; with plain `-n` each worker starts its own."""


@dataclass(frozen=True)
class Row:
    """One credential with one bad (or odd) input, and what its status must say."""

    name: str
    ready: str  # "True" or "False"
    reason: str
    says: str = ""  # a fragment of the Ready message
    spec: dict[str, Any] = field(default_factory=dict)  # merged over the default spec
    secret: dict[str, bytes] | None = None  # the credentials Secret's data; None: no Secret
    secret_type: str = "Opaque"
    user: str | None = None  # a user the Auth API knows, with `password`
    password: str = ""
    logins: int | None = None  # Auth API password logins by `user` once the row settled


def _login(user: str, password: str) -> dict[str, bytes]:
    return {"username": user.encode(), "password": password.encode()}


ROWS = [
    Row("good", "True", "TokenValid", user="good@example.com", password="pw-good", logins=1),
    # ----- spec fields the CRD lets through, or that only the operator can judge
    Row(
        "host-not-allowed",
        "False",
        "AuthURLNotAllowed",
        "--allowed-auth-host",
        spec={"authURL": "https://auth.evil.example/api/v1"},
    ),
    Row(
        "port-not-allowed",
        "False",
        "AuthURLNotAllowed",
        "127.0.0.1:9",
        spec={"authURL": "https://127.0.0.1:9/api/v1"},
    ),
    Row("plain-http", "False", "AuthURLNotAllowed", "https://", spec={"authURL": "http://{auth}"}),
    Row(
        "bracketed-host",
        "False",
        "InvalidSpec",
        "spec.authURL",
        spec={"authURL": "https://[auth-service.services.simacan.com]/api/v1"},
    ),
    Row(
        "port-with-colon",
        "False",
        "InvalidSpec",
        "spec.authURL",
        spec={"authURL": "https://auth-service.services.simacan.com:443:evil.example/"},
    ),
    Row("refresh-before-zero", "False", "InvalidSpec", "spec.refreshBefore", spec={"refreshBefore": "0s"}),
    Row(
        "wrong-path",
        "False",
        "AuthRequestRejected",
        "404",
        spec={"authURL": "https://{host}/nope"},
        user="wrong-path@example.com",
        password="pw-path",
    ),
    Row(
        "secret-taken",
        "False",
        "SecretConflict",
        "not owned",
        spec={"secretName": "someone-elses"},
        user="conflict@example.com",
        password="pw-conflict",
    ),
    Row(
        "refresh-before-too-long",
        "True",
        "TokenValid",
        spec={"refreshBefore": "5h"},
        user="long@example.com",
        password="pw-long",
    ),
    Row(
        "trailing-slash",
        "True",
        "TokenValid",
        spec={"authURL": "https://{auth}/"},
        user="slash@example.com",
        password="pw-slash",
    ),
    # ----- the credentials Secret
    Row("secret-missing", "False", "CredentialsSecretNotFound", "does not exist"),
    Row(
        "username-key-missing",
        "False",
        "CredentialsKeyMissing",
        "'username'",
        secret={"password": b"pw"},
    ),
    Row(
        "password-key-missing",
        "False",
        "CredentialsKeyMissing",
        "'password'",
        secret={"username": b"nobody@example.com"},
    ),
    Row(
        "password-empty",
        "False",
        "CredentialsKeyMissing",
        "'password'",
        secret={"username": b"nobody@example.com", "password": b""},
    ),
    Row(
        "password-not-utf8",
        "False",
        "CredentialsKeyMissing",
        "'password'",
        secret={"username": b"nobody@example.com", "password": b"\xff\xfe"},
    ),
    Row(
        "wrong-password",
        "False",
        "InvalidCredentials",
        "credentials Secret",
        secret=_login("wrong@example.com", "not-the-password"),
        user="wrong@example.com",
        password="the-password",
        logins=1,
    ),
    Row(
        "custom-keys",
        "True",
        "TokenValid",
        spec={"credentialsSecretRef": {"usernameKey": "user", "passwordKey": "pass"}},
        secret={"user": b"keys@example.com", "pass": b"pw-keys"},
        user="keys@example.com",
        password="pw-keys",
    ),
    Row(
        "basic-auth-type",
        "True",
        "TokenValid",
        secret_type="kubernetes.io/basic-auth",
        user="basic@example.com",
        password="pw-basic",
    ),
    Row(
        "password-final-newline",
        "True",
        "TokenValid",
        secret=_login("newline@example.com", "pw-newline\n"),
        user="newline@example.com",
        password="pw-newline",
    ),
    Row(
        "password-final-crlf",
        "True",
        "TokenValid",
        secret=_login("crlf@example.com", "pw-crlf\r\n"),
        user="crlf@example.com",
        password="pw-crlf",
    ),
    Row(
        "password-two-newlines",
        "False",
        "InvalidCredentials",
        secret=_login("twonl@example.com", "pw-two\n\n"),
        user="twonl@example.com",
        password="pw-two",
        logins=1,
    ),
    Row(
        "password-spaces-kept",
        "True",
        "TokenValid",
        secret=_login("spaces@example.com", "  pw spaces  "),
        user="spaces@example.com",
        password="  pw spaces  ",
    ),
    Row(
        "password-non-ascii",
        "True",
        "TokenValid",
        secret=_login("unicode@example.com", "pässwörd-€-密码"),
        user="unicode@example.com",
        password="pässwörd-€-密码",
    ),
]


@dataclass
class World:
    ns: Namespace
    fake_auth: FakeAuthAPI
    operator: OperatorProcess


def _spec(row: Row, fake_auth: FakeAuthAPI) -> dict[str, Any]:
    host = f"127.0.0.1:{fake_auth.port}"
    spec: dict[str, Any] = {
        "credentialsSecretRef": {"name": f"{row.name}-login"},
        "authURL": fake_auth.base_url,
    }
    for key, value in row.spec.items():
        if isinstance(value, dict):
            spec[key] = {**spec.get(key, {}), **value}
        elif isinstance(value, str):
            spec[key] = value.replace("{auth}", fake_auth.base_url.removeprefix("https://")).replace(
                "{host}", host
            )
        else:
            spec[key] = value
    return spec


def _secret_data(row: Row) -> dict[str, bytes] | None:
    if row.secret is not None:
        return row.secret
    if row.name == "secret-missing":
        return None
    return _login(row.user or f"{row.name}@example.com", row.password or "pw")


@pytest.fixture(scope="module")
def world(
    cluster: ClusterHandle, signing_key: rsa.RSAPrivateKey, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    users = {row.user: row.password for row in ROWS if row.user}
    ns = Namespace.create(api_client(cluster.kubeconfig))
    with FakeAuthAPI(users, access_lifetime=60, signing_key=signing_key, tls=True) as fake_auth:
        ns.create_secret("someone-elses", note="not the operator's")
        for row in ROWS:
            data = _secret_data(row)
            if data is not None:
                body: Any = {
                    "metadata": {"name": f"{row.name}-login"},
                    "type": row.secret_type,
                    "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
                }
                ns.core.create_namespaced_secret(ns.name, body)
            ns.create_credential(row.name, _spec(row, fake_auth))
        log = Path(tmp_path_factory.mktemp("bad-input")) / "operator.log"
        args = auth_api_args(fake_auth)
        operator = OperatorProcess(cluster.operator_kubeconfig, ns.name, log, args).start()
        try:
            yield World(ns, fake_auth, operator)
        finally:
            operator.stop()
            own = [line for line in operator.logs().splitlines() if " kopf." not in line]
            print("----- operator log without kopf's lines (last 200)\n" + "\n".join(own[-200:]))


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_bad_input_row(world: World, row: Row) -> None:
    ns = world.ns

    def settled() -> bool:
        seen = ns.ready(row.name) or {}
        assert (seen.get("status"), seen.get("reason")) == (row.ready, row.reason), seen.get("message")
        return True

    eventually(settled, what=f"{row.name}: Ready={row.ready} {row.reason}")

    message = ns.ready(row.name)["message"]  # type: ignore[index]
    assert row.says in message
    if row.ready == "False":
        assert row.reason in ns.event_reasons(row.name), "a problem starts with a Warning Event"
        assert ns.secret(ns.credential(row.name).get("spec", {}).get("secretName") or row.name) is None or (
            row.reason == "SecretConflict"
        ), "no token Secret is written for a credential that never got a token"
    else:
        assert ns.secret_text(row.name, "token"), "the token Secret holds a token"
    if row.logins is not None:
        assert row.user is not None
        stays(
            lambda: world.fake_auth.count("password", username=row.user) == row.logins,
            2,
            what=f"{row.logins} password login(s) for {row.name}: a rejected login is not retried",
        )
    assert "Traceback" not in world.operator.logs()


def test_the_conflicting_secret_is_left_untouched(world: World) -> None:
    eventually(lambda: world.ns.ready_reason("secret-taken") == ("False", "SecretConflict"), what="conflict")

    assert world.ns.secret_text("someone-elses", "note") == "not the operator's"
    assert world.ns.secret_text("someone-elses", "token") is None


def test_every_row_has_a_distinct_name() -> None:
    assert len({row.name for row in ROWS}) == len(ROWS) >= 20
