"""The CRD as kube-apiserver enforces it: structural schema, validation, defaults, printer columns."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from localenv.controlplane import ControlPlane
from localenv.k8s import GROUP, PLURAL, VERSION, Namespace
from tests.e2e.conftest import kubectl


def create(ns: Namespace, spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SimacanCredential",
        "metadata": {"name": "c"},
        "spec": spec,
    }
    created: Any = ns.custom.create_namespaced_custom_object(GROUP, VERSION, ns.name, PLURAL, body)
    return dict(created)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "spec.credentialsSecretRef"),
        ({"credentialsSecretRef": {}}, "spec.credentialsSecretRef.name"),
        ({"credentialsSecretRef": {"name": "Not_A_Name"}}, "spec.credentialsSecretRef.name"),
        ({"credentialsSecretRef": {"name": "login"}, "suspend": "yes"}, "spec.suspend"),
        ({"credentialsSecretRef": {"name": "login"}, "refreshBefore": "15 minutes"}, "spec.refreshBefore"),
        ({"credentialsSecretRef": {"name": "login"}, "authURL": "ftp://example.com"}, "spec.authURL"),
        ({"credentialsSecretRef": {"name": "login"}, "secretName": "UPPER"}, "spec.secretName"),
        (
            {"credentialsSecretRef": {"name": "login"}, "secretTemplate": {"labels": {"a": 1}}},
            "spec.secretTemplate.labels.a",
        ),
    ],
    ids=[
        "no-ref",
        "no-ref-name",
        "bad-ref-name",
        "suspend-not-bool",
        "bad-duration",
        "not-http",
        "bad-secret-name",
        "label-not-string",
    ],
)
def test_malformed_specs_are_rejected_naming_the_field(
    ns: Namespace, spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApiException) as rejected:
        create(ns, spec)
    assert rejected.value.status == 422
    assert field in json.loads(rejected.value.body or "{}")["message"]


def test_defaults_are_filled_in_by_the_api_server(ns: Namespace) -> None:
    spec = create(ns, {"credentialsSecretRef": {"name": "login"}})["spec"]
    assert spec == {
        "credentialsSecretRef": {"name": "login", "usernameKey": "username", "passwordKey": "password"},
        "authURL": "https://auth-service.services.simacan.com/api/v1",
        "minRestartInterval": "5m",
        "suspend": False,
    }


def test_kubectl_get_shows_ready_secret_expires_and_age(ns: Namespace, installed: ControlPlane) -> None:
    create(ns, {"credentialsSecretRef": {"name": "login"}})
    status = {
        "secretName": "c",
        "expiresAt": "2026-11-28T12:00:00Z",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "TokenValid",
                "message": "ok",
                "lastTransitionTime": "2026-11-28T11:00:00Z",
            }
        ],
    }
    ns.custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns.name, PLURAL, "c", {"status": status})
    printed = kubectl(installed, "get", "simacancredentials", "-n", ns.name).splitlines()
    assert printed[0].split() == ["NAME", "READY", "SECRET", "EXPIRES", "AGE"]
    assert printed[1].split()[:4] == ["c", "True", "c", "2026-11-28T12:00:00Z"]


def test_kubectl_get_cluster_credentials_shows_ready_namespaces_failed_expires_and_age(
    ns: Namespace, installed: ControlPlane
) -> None:
    name = f"fleet-{ns.name}"  # cluster-scoped: unique per test
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterSimacanCredential",
        "metadata": {"name": name},
        "spec": {"credentialsSecretRef": {"name": "login", "namespace": ns.name}, "secretName": "t"},
    }
    ns.custom.create_cluster_custom_object(GROUP, VERSION, "clustersimacancredentials", body)
    try:
        status = {
            "namespaces": 12,
            "failedCount": 1,
            "expiresAt": "2026-11-28T12:00:00Z",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "SecretConflict",
                    "message": "1 of 12 namespaces failed",
                    "lastTransitionTime": "2026-11-28T11:00:00Z",
                }
            ],
        }
        ns.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "clustersimacancredentials", name, {"status": status}
        )
        printed = kubectl(installed, "get", "clustersimacancredential", name).splitlines()
        assert printed[0].split() == ["NAME", "READY", "NAMESPACES", "FAILED", "EXPIRES", "AGE"]
        assert printed[1].split()[:5] == [name, "False", "12", "1", "2026-11-28T12:00:00Z"]
    finally:
        ns.custom.delete_cluster_custom_object(GROUP, VERSION, "clustersimacancredentials", name)
