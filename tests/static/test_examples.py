"""examples/ is what a user copies: every file must be valid as written, before the demo applies it.

Built-in kinds go through kubernetes-validate's strict 1.36 schema (unknown fields fail);
SimacanCredentials through our own CRD's schema, as the API server would check them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # comes with kubernetes-validate
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.static.tools import REPO_ROOT

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
CRD = REPO_ROOT / "crds" / "simacancredentials.auth.simacan.com.yaml"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def crd_schema() -> dict[str, Any]:
    schema: dict[str, Any] = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"
    ]
    return schema


def test_there_are_the_examples_the_demo_applies() -> None:
    kinds = sorted(doc["kind"] for path in EXAMPLES for doc in documents(path))
    assert kinds == ["Deployment", "Secret", "SimacanCredential", "SimacanCredential"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_valid_as_written(path: Path) -> None:
    for doc in documents(path):
        assert "namespace" not in doc["metadata"], "examples apply into any namespace (kubectl apply -n)"
        if doc["kind"] == "SimacanCredential":
            jsonschema.validate(doc, crd_schema())
        else:
            assert kubernetes_validate.validate(doc, "1.36.0", strict=True) == "1.36"


def test_the_crd_schema_check_is_not_vacuous() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"spec": {"credentialsSecretRef": {}}}, crd_schema())


def test_the_workload_mounts_the_whole_secret_not_a_subpath_or_env_var() -> None:
    """A subPath mount or an env var never sees a refreshed token (see docs/usage.md)."""
    (deployment,) = documents(REPO_ROOT / "examples" / "workload.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "env" not in container and "envFrom" not in container
    assert all("subPath" not in mount for mount in container["volumeMounts"])
    secrets = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
    assert secrets == ["fleet-api"]
