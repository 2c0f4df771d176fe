"""Bad specs that kube-apiserver itself rejects (schema and CEL rules): `kubectl apply` fails up front.

Rows of the "Bad input and how it is handled" table in docs/troubleshooting.md; the emulator of the
fast tier runs no CEL and no pattern checks, so these need the real API server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from localenv.controlplane import ControlPlane
from localenv.k8s import GROUP, PLURAL, VERSION, Namespace

HOST = "auth-service.services.simacan.com"
LOGIN = {"credentialsSecretRef": {"name": "login"}}


@dataclass(frozen=True)
class Row:
    id: str
    spec: dict[str, Any]
    field: str  # the field the API server names
    says: str  # a fragment of its message


ROWS = [
    Row("authurl-http", {**LOGIN, "authURL": f"http://{HOST}/api/v1"}, "spec.authURL", "https://"),
    Row("authurl-ftp", {**LOGIN, "authURL": f"ftp://{HOST}/api/v1"}, "spec.authURL", "https://"),
    Row("authurl-no-scheme", {**LOGIN, "authURL": f"{HOST}/api/v1"}, "spec.authURL", "https://"),
    Row("authurl-no-host", {**LOGIN, "authURL": "https:///api/v1"}, "spec.authURL", "must name a host"),
    Row(
        "authurl-userinfo",
        {**LOGIN, "authURL": f"https://bot:hunter2@{HOST}/api/v1"},
        "spec.authURL",
        "user info",
    ),
    Row(
        "authurl-at-trick",
        {**LOGIN, "authURL": f"https://{HOST}@evil.example/api/v1"},
        "spec.authURL",
        "user info",
    ),
    Row("authurl-query", {**LOGIN, "authURL": f"https://{HOST}/api/v1?next=x"}, "spec.authURL", "query"),
    Row("authurl-fragment", {**LOGIN, "authURL": f"https://{HOST}/api/v1#x"}, "spec.authURL", "fragment"),
    Row("authurl-whitespace", {**LOGIN, "authURL": f"https://{HOST}/api v1"}, "spec.authURL", "whitespace"),
    Row(
        "authurl-too-long",
        {**LOGIN, "authURL": f"https://{HOST}/" + "a" * 2048},
        "spec.authURL",
        "2048",
    ),
    Row("no-credentials-ref", {}, "spec.credentialsSecretRef", "Required"),
    Row("no-credentials-name", {"credentialsSecretRef": {}}, "spec.credentialsSecretRef.name", "Required"),
    Row(
        "credentials-name-path",
        {"credentialsSecretRef": {"name": "../../other-ns/secrets/x"}},
        "spec.credentialsSecretRef.name",
        "should match",
    ),
    Row(
        "credentials-name-upper",
        {"credentialsSecretRef": {"name": "Login"}},
        "spec.credentialsSecretRef.name",
        "should match",
    ),
    Row(
        "username-key-slash",
        {"credentialsSecretRef": {"name": "login", "usernameKey": "a/b"}},
        "spec.credentialsSecretRef.usernameKey",
        "should match",
    ),
    Row(
        "password-key-empty",
        {"credentialsSecretRef": {"name": "login", "passwordKey": ""}},
        "spec.credentialsSecretRef.passwordKey",
        "at least 1",
    ),
    Row("secret-name-upper", {**LOGIN, "secretName": "UPPER"}, "spec.secretName", "should match"),
    Row("secret-name-too-long", {**LOGIN, "secretName": "a" * 254}, "spec.secretName", "253"),
    Row(
        "refresh-before-words", {**LOGIN, "refreshBefore": "15 minutes"}, "spec.refreshBefore", "should match"
    ),
    Row("refresh-before-negative", {**LOGIN, "refreshBefore": "-5m"}, "spec.refreshBefore", "should match"),
    Row("suspend-not-bool", {**LOGIN, "suspend": "yes"}, "spec.suspend", "boolean"),
    Row(
        "label-not-string",
        {**LOGIN, "secretTemplate": {"labels": {"team": 1}}},
        "spec.secretTemplate.labels.team",
        "string",
    ),
    # Bounds on what a tenant controls (limits.py): the CRD rejects what the operator would refuse.
    Row(
        "labels-33",
        {**LOGIN, "secretTemplate": {"labels": {f"l{i}": "v" for i in range(33)}}},
        "spec.secretTemplate.labels",
        "32",
    ),
    Row(
        "label-value-64",
        {**LOGIN, "secretTemplate": {"labels": {"team": "v" * 64}}},
        "spec.secretTemplate.labels.team",
        "63",
    ),
    Row(
        "label-key-invalid",
        {**LOGIN, "secretTemplate": {"labels": {"a b": "v"}}},
        "spec.secretTemplate.labels",
        "label keys",
    ),
    Row(
        "annotations-33",
        {**LOGIN, "secretTemplate": {"annotations": {f"a{i}": "v" for i in range(33)}}},
        "spec.secretTemplate.annotations",
        "32",
    ),
    Row(
        "annotation-value-4097",
        {**LOGIN, "secretTemplate": {"annotations": {"a": "v" * 4097}}},
        "spec.secretTemplate.annotations.a",
        "4096",
    ),
    Row(
        "annotation-key-318",
        {**LOGIN, "secretTemplate": {"annotations": {"a" * 318: "v"}}},
        "spec.secretTemplate.annotations",
        "annotation keys",
    ),
    Row(
        "data-17-keys",
        {**LOGIN, "secretTemplate": {"data": {f"k{i}": "v" for i in range(17)}}},
        "spec.secretTemplate.data",
        "16",
    ),
    Row(
        "data-key-slash",
        {**LOGIN, "secretTemplate": {"data": {"a/b": "v"}}},
        "spec.secretTemplate.data",
        "Secret keys",
    ),
    Row(
        "restart-target-name-path",
        {**LOGIN, "rolloutRestartTargets": [{"kind": "Deployment", "name": "../x"}]},
        "spec.rolloutRestartTargets[0].name",
        "should match",
    ),
    Row("refresh-before-33", {**LOGIN, "refreshBefore": "1s" * 17}, "spec.refreshBefore", "32"),
    Row(
        "min-restart-interval-1s",
        {**LOGIN, "minRestartInterval": "59s"},
        "spec.minRestartInterval",
        "at least 1m",
    ),
]


def at_every_bound() -> dict[str, Any]:
    """A spec with every bounded field at its bound: the CRD accepts it."""
    labels = {f"example.com/{'l' * 50}{i:02d}": "v" * 63 for i in range(32)}
    annotations = {f"{'p' * 253}/{'a' * 61}{i:02d}": "v" * 4096 for i in range(32)}
    return {
        **LOGIN,
        "secretName": "s" * 253,
        "secretTemplate": {
            "labels": labels,
            "annotations": annotations,
            "data": {f"{i:02d}" + "k" * 251: "x" * 4096 for i in range(16)},
        },
        "rolloutRestartTargets": [{"kind": "Deployment", "name": f"{i:02d}" + "d" * 251} for i in range(32)],
        "minRestartInterval": "1m",
        "refreshBefore": "1h" + "0m" * 15,
    }


def test_a_spec_at_every_bound_passes_the_crd(ns: Namespace) -> None:
    created = _create(ns, at_every_bound())

    assert len(created["spec"]["secretTemplate"]["annotations"]) == 32


def _create(ns: Namespace, spec: dict[str, Any]) -> Any:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SimacanCredential", "metadata": {"name": "c"}}
    return ns.custom.create_namespaced_custom_object(GROUP, VERSION, ns.name, PLURAL, {**body, "spec": spec})


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_the_api_server_rejects_a_bad_spec_naming_the_field(ns: Namespace, row: Row) -> None:
    with pytest.raises(ApiException) as rejected:
        _create(ns, row.spec)

    assert rejected.value.status == 422
    message = json.loads(rejected.value.body or "{}")["message"]
    assert row.field in message and row.says in message, message
    assert "hunter2" not in message or row.id == "authurl-userinfo"


@pytest.mark.parametrize(
    "url",
    [
        f"https://{HOST}/api/v1",
        f"HTTPS://{HOST}/api/v1",
        f"https://{HOST}:8443/api/v1",
        "https://127.0.0.1:9443/api/v1",
        "https://[::1]:9443/api/v1",
        f"https://{HOST}",
    ],
)
def test_good_auth_urls_pass_the_cel_rules(ns: Namespace, url: str) -> None:
    created = _create(ns, {**LOGIN, "authURL": url})

    assert created["spec"]["authURL"] == url


def _kubectl_apply(
    plane: ControlPlane, manifest: dict[str, Any], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("kubectl")
    assert binary, "kubectl is required: run localenv/install-deps.sh"
    path = tmp_path / "credential.json"
    path.write_text(json.dumps(manifest))
    return subprocess.run(
        [binary, "--kubeconfig", str(plane.admin_kubeconfig), "apply", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        pytest.param({**LOGIN, "authURL": f"http://{HOST}/api/v1"}, "must be an https:// URL", id="http"),
        pytest.param(
            {**LOGIN, "authUrl": f"https://{HOST}/api/v1"}, 'unknown field "spec.authUrl"', id="typo"
        ),
    ],
)
def test_kubectl_apply_fails_up_front(
    ns: Namespace, installed: ControlPlane, tmp_path: Path, spec: dict[str, Any], says: str
) -> None:
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SimacanCredential",
        "metadata": {"name": "c", "namespace": ns.name},
        "spec": spec,
    }

    result = _kubectl_apply(installed, manifest, tmp_path)

    assert result.returncode != 0
    assert says in result.stderr, result.stderr
    with pytest.raises(ApiException) as missing:
        ns.credential("c")
    assert missing.value.status == 404


def _cluster_spec(selector: dict[str, Any]) -> dict[str, Any]:
    return {
        "credentialsSecretRef": {"name": "login", "namespace": "simacan-token-operator"},
        "secretName": "simacan-token",
        "namespaceSelector": selector,
    }


@pytest.mark.parametrize(
    ("selector", "says"),
    [
        pytest.param({"matchLabels": {f"l{i}": "v" for i in range(33)}}, "32", id="33-match-labels"),
        pytest.param(
            {"matchExpressions": [{"key": f"k{i}", "operator": "Exists"} for i in range(17)]},
            "16",
            id="17-match-expressions",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "k", "operator": "In", "values": [f"v{i}" for i in range(33)]}]},
            "32",
            id="33-values",
        ),
    ],
)
def test_the_api_server_bounds_a_cluster_credentials_selector(
    ns: Namespace, selector: dict[str, Any], says: str
) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterSimacanCredential",
        "metadata": {"name": f"bounds-{ns.name}"},
        "spec": _cluster_spec(selector),
    }
    with pytest.raises(ApiException) as rejected:
        ns.custom.create_cluster_custom_object(GROUP, VERSION, "clustersimacancredentials", body)

    assert rejected.value.status == 422
    message = json.loads(rejected.value.body or "{}")["message"]
    assert "spec.namespaceSelector" in message and says in message, message


def test_a_cluster_credential_selector_at_its_bounds_passes_the_crd(ns: Namespace) -> None:
    selector = {
        "matchLabels": {f"example.com/l{i}": "v" * 63 for i in range(32)},
        "matchExpressions": [
            {"key": f"k{i}", "operator": "NotIn", "values": [f"v{j}" for j in range(32)]} for i in range(16)
        ],
    }
    name = f"bounds-{ns.name}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterSimacanCredential",
        "metadata": {"name": name},
        "spec": _cluster_spec(selector),
    }
    created: Any = ns.custom.create_cluster_custom_object(GROUP, VERSION, "clustersimacancredentials", body)
    try:
        assert len(created["spec"]["namespaceSelector"]["matchExpressions"]) == 16
    finally:
        ns.custom.delete_cluster_custom_object(GROUP, VERSION, "clustersimacancredentials", name)


def _create_cluster(ns: Namespace, data: dict[str, str]) -> Any:
    """A ClusterSimacanCredential that selects no namespace (no selector, no list)."""
    spec = {
        "credentialsSecretRef": {"name": "login", "namespace": "simacan-token-operator"},
        "secretName": "simacan-token",
        "secretTemplate": {"data": data},
    }
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterSimacanCredential",
        "metadata": {"name": f"data-{ns.name}"},
        "spec": spec,
    }
    return ns.custom.create_cluster_custom_object(GROUP, VERSION, "clustersimacancredentials", body)


@pytest.mark.parametrize(
    ("data", "field", "says"),
    [
        pytest.param({f"k{i}": "v" for i in range(17)}, "spec.secretTemplate.data", "16", id="17-keys"),
        pytest.param({"a/b": "v"}, "spec.secretTemplate.data", "Secret keys", id="key-slash"),
        pytest.param({"a": "v" * 4097}, "spec.secretTemplate.data.a", "4096", id="value-4097"),
    ],
)
def test_the_api_server_bounds_a_cluster_credentials_secret_template_data(
    ns: Namespace, data: dict[str, str], field: str, says: str
) -> None:
    with pytest.raises(ApiException) as rejected:
        _create_cluster(ns, data)

    assert rejected.value.status == 422
    message = json.loads(rejected.value.body or "{}")["message"]
    assert field in message and says in message, message


def test_cluster_credential_data_at_its_bounds_passes_the_crd(ns: Namespace) -> None:
    """16 keys of 253 characters with values of 4,096: kept, not pruned (the operator then checks
    the render bound: 16 such plain values exceed it, which is InvalidSpec in its status)."""
    data = {f"{i:02d}" + "k" * 251: "x" * 4096 for i in range(16)}
    created: Any = _create_cluster(ns, data)
    try:
        assert created["spec"]["secretTemplate"]["data"] == data
    finally:
        ns.custom.delete_cluster_custom_object(GROUP, VERSION, "clustersimacancredentials", f"data-{ns.name}")
