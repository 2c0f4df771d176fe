"""ClusterSimacanCredential: one login, one token Secret in every selected namespace.

The operator runs as a process watching all namespaces (only such an operator serves the
kind). Each test selects namespaces by a label value of its own, so that it never selects
another test's namespaces on a shared cluster, and deletes its ClusterSimacanCredential after.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import GROUP, VERSION, Namespace
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually, stays
from tests.conftest import PASSWORD, USERNAME, auth_api_args
from tests.support.cluster import ClusterHandle

PLURAL = "clustersimacancredentials"
SECRET = "simacan-token"
LABEL = "simacan.com/token"


@dataclass
class Fleet:
    """One test's ClusterSimacanCredential, the namespaces it may select, and their label value."""

    api: client.ApiClient
    platform: Namespace
    """Where the credentials Secret lives."""
    name: str = field(default_factory=lambda: f"fleet-{uuid.uuid4().hex[:8]}")
    label: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created: list[Namespace] = field(default_factory=list)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def namespace(self, selected: bool = True) -> Namespace:
        namespace = Namespace.create(self.api, prefix="fleet")
        if selected:
            self.select(namespace)
        self.created.append(namespace)
        return namespace

    def select(self, namespace: Namespace, selected: bool = True) -> None:
        labels = {LABEL: self.label if selected else None}
        self.core.patch_namespace(namespace.name, {"metadata": {"labels": labels}})

    def create(self, fake_auth: FakeAuthAPI, **extra: Any) -> dict[str, Any]:
        spec = {
            "credentialsSecretRef": {"name": "login", "namespace": self.platform.name},
            "namespaceSelector": {"matchLabels": {LABEL: self.label}},
            "secretName": SECRET,
            "authURL": fake_auth.base_url,
            **extra,
        }
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClusterSimacanCredential",
            "metadata": {"name": self.name},
            "spec": spec,
        }
        return self._dict(self.custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body))

    def get(self) -> dict[str, Any]:
        return self._dict(self.custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, self.name))

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.get().get("status") or {}
        return status

    def ready(self) -> tuple[str, str] | None:
        for condition in self.status().get("conditions") or []:
            if condition.get("type") == "Ready":
                return str(condition["status"]), str(condition["reason"])
        return None

    def delete(self) -> None:
        try:
            self.custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, self.name)
        except ApiException as error:
            if error.status != 404:
                raise

    def events(self) -> list[dict[str, Any]]:
        uid = self.get()["metadata"]["uid"]
        items = self._dict(self.core.list_namespaced_event("default")).get("items") or []
        return [e for e in items if (e.get("involvedObject") or {}).get("uid") == uid]

    def served(self, namespaces: list[Namespace]) -> dict[str, str | None]:
        return self.served_key(namespaces, "token")

    def served_key(self, namespaces: list[Namespace], key: str) -> dict[str, str | None]:
        return {ns.name: ns.secret_text(SECRET, key) for ns in namespaces}

    def _dict(self, obj: Any) -> dict[str, Any]:
        result = self.api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
        assert isinstance(result, dict)
        return result


@pytest.fixture
def fleet(admin_api: Any, ns: Namespace) -> Iterator[Fleet]:
    ns.create_login_secret("login", USERNAME, PASSWORD)
    made = Fleet(admin_api, ns)
    yield made
    made.delete()


@pytest.fixture
def cluster_operator(
    cluster: ClusterHandle, fake_auth: FakeAuthAPI, ns: Namespace, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start the operator watching all namespaces (as `scripts/run-operator` does), with this
    test's namespace (the fleet's platform) as its cluster credentials namespace."""
    started: list[OperatorProcess] = []

    def start(*extra: str, namespace: str = "") -> OperatorProcess:
        log = tmp_path / f"operator-{len(started)}.log"
        args = [*auth_api_args(fake_auth), "--cluster-credentials-namespace", ns.name, *extra]
        operator = OperatorProcess(cluster.operator_kubeconfig, namespace, log, args)
        started.append(operator)
        return operator.start()

    yield start
    for operator in started:
        if operator.process is not None:
            operator.stop()
        print(f"----- {operator.log_path.name} (last 12000 chars)\n{operator.logs()[-12000:]}")


def all_served(fleet: Fleet, namespaces: list[Namespace]) -> str:
    """The one token every namespace holds, once the status says all are served."""
    eventually(lambda: fleet.ready() == ("True", "TokenValid"), what="ClusterSimacanCredential Ready")
    tokens = fleet.served(namespaces)
    assert None not in tokens.values(), tokens
    assert len(set(tokens.values())) == 1, "one login, one token everywhere"
    token = next(iter(tokens.values()))
    assert token is not None
    return token


def served_in_three_namespaces(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess]
) -> tuple[list[Namespace], OperatorProcess, str]:
    """Three selected namespaces, the ClusterSimacanCredential and an operator, once all three hold
    its one token; returns them with that token."""
    namespaces = [fleet.namespace() for _ in range(3)]
    fleet.create(fake_auth)
    operator = cluster_operator()
    return namespaces, operator, all_served(fleet, namespaces)


def test_one_login_serves_every_selected_namespace(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess]
) -> None:
    labelled = [fleet.namespace() for _ in range(3)]
    listed = fleet.namespace(selected=False)
    other = fleet.namespace(selected=False)
    created = fleet.create(fake_auth, namespaces=[listed.name])
    operator = cluster_operator()

    all_served(fleet, [*labelled, listed])
    assert operator.healthz().status_code == 200
    assert other.secret(SECRET) is None, "a namespace neither labelled nor listed gets nothing"
    assert fake_auth.count("password") == 1 and fake_auth.count() == 1, fake_auth.calls
    secret = labelled[0].secret(SECRET)
    assert secret is not None
    [owner] = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "ClusterSimacanCredential",
        fleet.name,
        created["metadata"]["uid"],
    )
    assert set(secret["data"]) == {"token", "token_type", "expires_at"}
    status = fleet.status()
    assert (status["namespaces"], status["failedCount"], status["failedNamespaces"]) == (4, 0, [])
    assert status["secretName"] == SECRET
    assert status["subject"] == USERNAME
    assert status["refreshedAt"] <= status["nextRefreshAt"] < status["expiresAt"]
    assert "Issued" in [e["reason"] for e in fleet.events()]


def test_secret_template_data_is_written_in_every_selected_namespace(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess]
) -> None:
    namespaces = [fleet.namespace(), fleet.namespace()]
    created = fleet.create(fake_auth, secretTemplate={"data": {"authorization": "Bearer {{ .token }}"}})
    assert created["spec"]["secretTemplate"].get("data"), "kept: a real API server prunes unknown fields"
    cluster_operator()

    token = all_served(fleet, namespaces)
    assert fleet.served_key(namespaces, "authorization") == {ns.name: f"Bearer {token}" for ns in namespaces}


def test_secret_template_data_over_the_render_bound_is_invalid_spec(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess]
) -> None:
    namespace = fleet.namespace()
    bomb = {f"k{i}": "{{ .token }}" * 341 for i in range(16)}  # each value within the CRD's 4,096
    fleet.create(fake_auth, secretTemplate={"data": bomb})
    cluster_operator()

    eventually(lambda: fleet.ready() == ("False", "InvalidSpec"), what="InvalidSpec")
    [condition] = fleet.status()["conditions"]
    assert "could render" in condition["message"] and "65536" in condition["message"], condition
    assert "InvalidSpec" in [e["reason"] for e in fleet.events()]
    assert namespace.secret(SECRET) is None and fake_auth.calls == [], "nothing rendered, no login"


def test_namespaces_that_start_or_stop_matching_gain_or_lose_the_secret_within_seconds(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess]
) -> None:
    kept, leaving = fleet.namespace(), fleet.namespace()
    foreign_leaving = fleet.namespace()
    fleet.create(fake_auth)
    cluster_operator()
    token = all_served(fleet, [kept, leaving, foreign_leaving])

    joining = fleet.namespace()  # labelled after the operator has served the others
    eventually(
        lambda: joining.secret_text(SECRET, "token") == token, timeout=5, what="Secret in a new namespace"
    )

    # A Secret someone else put in place of ours is not ours to delete when its namespace leaves.
    # Replaced in one write (without our ownerReference): a deletion the operator undoes within
    # milliseconds would race the create that follows it.
    def replace_with_foreign() -> bool:
        current = foreign_leaving.secret(SECRET)
        assert current is not None
        meta = {"name": SECRET, "resourceVersion": current["metadata"]["resourceVersion"]}
        body: Any = {"metadata": meta, "data": {"token": base64.b64encode(b"not-from-the-operator").decode()}}
        try:
            fleet.core.replace_namespaced_secret(SECRET, foreign_leaving.name, body)
        except ApiException as error:
            if error.status != 409:  # written meanwhile: read it again
                raise
            return False
        return True

    eventually(replace_with_foreign, timeout=10, what="our Secret replaced by a foreign one")
    eventually(lambda: fleet.ready() == ("False", "SecretConflict"), what="conflict reported")
    fleet.select(leaving, selected=False)
    fleet.select(foreign_leaving, selected=False)
    eventually(lambda: leaving.secret(SECRET) is None, timeout=5, what="our Secret deleted")
    eventually(lambda: fleet.status().get("namespaces") == 2, what="two namespaces selected")
    assert foreign_leaving.secret_text(SECRET, "token") == "not-from-the-operator"
    assert kept.secret_text(SECRET, "token") == token
    assert fleet.ready() == ("True", "TokenValid")

    fleet.core.delete_namespace(joining.name)  # a deleted namespace needs nothing from us
    eventually(lambda: fleet.status().get("namespaces") == 1, what="a deleted namespace dropped")
    assert fleet.ready() == ("True", "TokenValid")
    assert fake_auth.count() == 1, "the namespaces come and go, the login stays"


def test_a_foreign_secret_in_one_namespace_is_listed_while_the_others_are_served(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess]
) -> None:
    served = [fleet.namespace(), fleet.namespace()]
    occupied = fleet.namespace()
    occupied.create_secret(SECRET, token="someone-elses")
    fleet.create(fake_auth)
    cluster_operator()

    eventually(lambda: fleet.ready() == ("False", "SecretConflict"), what="conflict reported")
    tokens = fleet.served(served)
    assert None not in tokens.values()
    status = fleet.status()
    assert (status["namespaces"], status["failedCount"]) == (3, 1)
    [failed] = status["failedNamespaces"]
    assert (failed["namespace"], failed["reason"]) == (occupied.name, "SecretConflict")
    assert "ClusterSimacanCredential" in failed["message"]
    assert occupied.secret_text(SECRET, "token") == "someone-elses", "never overwritten"
    assert "SecretConflict" in [e["reason"] for e in fleet.events()]

    occupied.delete_secret(SECRET)
    eventually(lambda: fleet.ready() == ("True", "TokenValid"), what="served once the Secret is gone")
    assert occupied.secret_text(SECRET, "token") == tokens[served[0].name]
    assert fake_auth.count() == 1


def test_deleted_or_edited_secret_is_restored_and_a_restart_makes_no_login(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess]
) -> None:
    namespaces, operator, token = served_in_three_namespaces(fleet, fake_auth, cluster_operator)

    namespaces[0].delete_secret(SECRET)
    namespaces[1].set_secret_data(SECRET, token="tampered")
    eventually(
        lambda: fleet.served(namespaces[:2]) == {ns.name: token for ns in namespaces[:2]},
        timeout=5,
        what="Secrets restored",
    )
    assert fake_auth.count() == 1, "restored from the token held, without a login"

    # the stale-consumer check of every namespace reports a moment after the tokens
    eventually(lambda: "staleConsumerCount" in fleet.status(), what="the status complete")
    versions = {ns.name: ns.secret(SECRET)["metadata"]["resourceVersion"] for ns in namespaces}  # type: ignore[index]
    status = fleet.status()
    fake_auth.reset_counts()
    operator.restart()
    eventually(
        lambda: operator.metric("simacan_credential_ready", namespace="", name=fleet.name) == 1,
        what="looked at after the restart",
    )
    stays(lambda: fake_auth.calls == [], 2, what="no Auth API call after a restart")
    assert {ns.name: ns.secret(SECRET)["metadata"]["resourceVersion"] for ns in namespaces} == versions  # type: ignore[index]
    assert fleet.status() == status, "nor a rewritten status"


def test_no_selected_namespace_is_ready_with_reason_no_namespaces(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess]
) -> None:
    fleet.create(fake_auth)
    cluster_operator()
    eventually(lambda: fleet.ready() == ("True", "NoNamespaces"), what="NoNamespaces")
    assert fleet.status()["namespaces"] == 0
    assert fake_auth.calls == [], "no namespace, no login"


def test_missing_credentials_secret_is_named_where_it_belongs(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess]
) -> None:
    namespace = fleet.namespace()
    fleet.platform.delete_secret("login")
    fleet.create(fake_auth)
    cluster_operator()
    eventually(lambda: fleet.ready() == ("False", "CredentialsSecretNotFound"), what="missing Secret")
    [failed] = fleet.status()["failedNamespaces"]
    assert f"Secret {fleet.platform.name}/login" in failed["message"], failed

    fleet.platform.create_login_secret("login", USERNAME, PASSWORD)
    eventually(lambda: fleet.ready() == ("True", "TokenValid"), timeout=10, what="picked up when created")
    assert namespace.secret_text(SECRET, "token")


def test_a_credentials_secret_outside_the_cluster_credentials_namespace_is_invalid_spec(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess]
) -> None:
    """Whoever may create a ClusterSimacanCredential must not get a token from another team's
    password: a Secret outside --cluster-credentials-namespace is refused, one inside serves."""
    namespace = fleet.namespace()
    team = fleet.namespace(selected=False)
    team.create_login_secret("login", USERNAME, PASSWORD)
    fleet.create(fake_auth, credentialsSecretRef={"name": "login", "namespace": team.name})
    cluster_operator()

    eventually(lambda: fleet.ready() == ("False", "InvalidSpec"), what="InvalidSpec")
    [condition] = fleet.status()["conditions"]
    assert f"'{team.name}'" in condition["message"], condition
    assert f"must be in namespace '{fleet.platform.name}'" in condition["message"], condition
    stays(lambda: namespace.secret(SECRET) is None and fake_auth.calls == [], 2, what="no token, no login")
    [warning] = [e for e in fleet.events() if e["reason"] == "InvalidSpec"]
    assert (warning["type"], warning.get("count") or 1) == ("Warning", 1), warning

    # The same Secret name, the namespace left out: the configured one is meant, and it serves.
    patch = {"spec": {"credentialsSecretRef": {"namespace": None}}}
    fleet.custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, fleet.name, patch)
    token = all_served(fleet, [namespace])
    assert fake_auth.count("password") == 1, fake_auth.calls
    assert token and team.secret(SECRET) is None, "a namespace it does not select gets nothing"


def test_no_secret_material_in_logs_events_or_status(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess]
) -> None:
    fake_auth.access_lifetime = 4
    namespaces = [fleet.namespace(), fleet.namespace()]
    occupied = fleet.namespace()
    occupied.create_secret(SECRET, token="someone-elses")
    fleet.create(fake_auth)
    operator = cluster_operator()
    eventually(lambda: None not in fleet.served(namespaces).values(), what="served")
    eventually(lambda: fake_auth.count("refresh") >= 1, timeout=15, what="a refresh")
    secrets = fake_auth.secret_strings() | {PASSWORD}
    assert len([s for s in secrets if s.count(".") == 2]) >= 4, "a login and a refresh: two JWT pairs"
    seen = operator.logs() + str(fleet.get()) + str(fleet.events())
    for secret in secrets:
        assert secret not in seen, "secret material in the operator's logs, Events or status"


def test_an_operator_for_some_namespaces_ignores_the_kind_and_says_so(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess]
) -> None:
    namespace = fleet.namespace()
    fleet.create(fake_auth)
    operator = cluster_operator(namespace=fleet.platform.name)
    eventually(lambda: "ClusterSimacanCredentials are ignored" in operator.logs(), what="said at start")
    stays(lambda: fleet.status() == {} and namespace.secret(SECRET) is None, 2, what="not served")
    assert fake_auth.calls == []


def test_refresh_requested_annotation_gives_every_namespace_one_new_token(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess]
) -> None:
    namespaces, _, first = served_in_three_namespaces(fleet, fake_auth, cluster_operator)

    patch = {"metadata": {"annotations": {"auth.simacan.com/refresh-requested-at": "2026-12-01T00:00:00Z"}}}
    fleet.custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, fleet.name, patch)
    eventually(
        lambda: (
            len(set(fleet.served(namespaces).values()) - {first, None}) == 1
            and None not in fleet.served(namespaces).values()
            and first not in fleet.served(namespaces).values()
        ),
        timeout=10,
        what="one new token in every namespace",
    )
    eventually(
        lambda: fleet.status().get("lastRefreshRequest") == "2026-12-01T00:00:00Z", what="request recorded"
    )
    assert fake_auth.count() == 2, f"one login, then one new token for all: {fake_auth.calls}"


def test_a_rotated_password_is_one_new_login_for_every_namespace(
    fleet: Fleet, fake_auth: FakeAuthAPI, cluster_operator: Callable[..., OperatorProcess]
) -> None:
    namespaces, _, first = served_in_three_namespaces(fleet, fake_auth, cluster_operator)

    fake_auth.set_password(USERNAME, "rotated-password-9d2e")
    fleet.platform.set_secret_data("login", password="rotated-password-9d2e")
    eventually(
        lambda: (
            first not in fleet.served(namespaces).values()
            and len(set(fleet.served(namespaces).values())) == 1
        ),
        timeout=10,
        what="every namespace holds the new account's token",
    )
    assert fake_auth.count("password") == 2, f"one login per password: {fake_auth.calls}"
    assert "PasswordChanged" in [e["reason"] for e in fleet.events()]
