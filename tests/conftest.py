"""Fixtures shared by both operator tiers; each tier's conftest provides the `cluster` fixture."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import Namespace, api_client
from localenv.operator_process import OperatorProcess
from localenv.pki import new_rsa_key
from tests.support.cluster import ClusterHandle

SUMMARY: list[str] = []
"""Figures a tier wants shown at the end of the run (e.g. control-plane provisioning time)."""

USERNAME = "api-user@example.com"
PASSWORD = "correct-horse-battery-staple-7f3a"


@pytest.fixture(scope="session")
def signing_key() -> rsa.RSAPrivateKey:
    return new_rsa_key()


@pytest.fixture
def fake_auth(signing_key: rsa.RSAPrivateKey) -> Iterator[FakeAuthAPI]:
    """A real HTTPS Auth API on 127.0.0.1 issuing RS256 JWTs; the password never travels over plain http."""
    with FakeAuthAPI({USERNAME: PASSWORD}, access_lifetime=60, signing_key=signing_key, tls=True) as fake:
        yield fake


@pytest.fixture
def admin_api(cluster: ClusterHandle) -> Any:
    """Per test: a session-wide client would keep talking to whichever tier's cluster came
    first when one pytest worker runs tests of both tiers."""
    return api_client(cluster.kubeconfig)


@pytest.fixture
def ns(admin_api: Any) -> Namespace:
    return Namespace.create(admin_api)


def auth_api_args(fake_auth: FakeAuthAPI, allowed_host: str | None = None) -> list[str]:
    """Operator flags that trust the fake's CA and allow its host:port (or `allowed_host` instead)."""
    return [
        "--allowed-auth-host",
        allowed_host or f"127.0.0.1:{fake_auth.port}",
        "--auth-ca-file",
        str(fake_auth.ca_file),
    ]


@pytest.fixture
def start_operator(
    cluster: ClusterHandle, ns: Namespace, fake_auth: FakeAuthAPI, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start the operator as a process watching this test's namespace, trusting and allowing the
    `auth` fixture's HTTPS Auth API; stopped at teardown."""
    started: list[OperatorProcess] = []

    def start(*extra_args: str, allowed_host: str | None = None) -> OperatorProcess:
        args = [*auth_api_args(fake_auth, allowed_host), *extra_args]
        operator = OperatorProcess(
            cluster.operator_kubeconfig, ns.name, tmp_path / f"operator-{len(started)}.log", args
        )
        started.append(operator)
        return operator.start()

    yield start
    for operator in started:
        if operator.process is not None:
            operator.stop()
        # pytest shows this only when the test fails: the operator's side of the story.
        print(f"----- {operator.log_path.name} (last 12000 chars)\n{operator.logs()[-12000:]}")


def credential_spec(fake_auth: FakeAuthAPI, secret: str = "login", **extra: Any) -> dict[str, Any]:
    return {"credentialsSecretRef": {"name": secret}, "authURL": fake_auth.base_url, **extra}


@dataclass(frozen=True)
class Issued:
    operator: OperatorProcess
    token: str


Issue = Callable[..., Issued]


@pytest.fixture
def issue(ns: Namespace, fake_auth: FakeAuthAPI, start_operator: Callable[..., OperatorProcess]) -> Issue:
    """The common start of a scenario: login Secret, SimacanCredential `fleet-api`, a running
    operator, and its first token in the Secret."""

    def issue(*operator_args: str, **spec: Any) -> Issued:
        ns.create_login_secret("login", USERNAME, PASSWORD)
        ns.create_credential("fleet-api", credential_spec(fake_auth, **spec))
        operator = start_operator(*operator_args)
        return Issued(operator, ns.ready_token("fleet-api"))

    return issue


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist, hand a worker's figures to the controller, which prints the summary."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["summary"] = list(SUMMARY)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    SUMMARY.extend(getattr(node, "workeroutput", {}).get("summary", []))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in SUMMARY:
        terminalreporter.write_line(line)
