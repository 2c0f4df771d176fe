"""Where ClusterSimacanCredentials' credentials Secrets must be: the flag, else $POD_NAMESPACE,
else the ServiceAccount's namespace file, else simacan-token-operator. The environment and the
file are passed in; nothing of the process is patched."""

from __future__ import annotations

from pathlib import Path

import pytest

from simacan_token_operator.app.cli import cluster_credentials_namespace, parse_args


@pytest.fixture
def sa_file(tmp_path: Path) -> Path:
    path = tmp_path / "namespace"
    path.write_text("from-service-account\n")
    return path


def test_the_flag_comes_first(sa_file: Path) -> None:
    assert cluster_credentials_namespace("ops", {"POD_NAMESPACE": "from-env"}, sa_file) == "ops"


def test_then_pod_namespace(sa_file: Path) -> None:
    assert cluster_credentials_namespace(None, {"POD_NAMESPACE": "from-env"}, sa_file) == "from-env"


@pytest.mark.parametrize("environ", [{}, {"POD_NAMESPACE": ""}, {"POD_NAMESPACE": "  "}])
def test_then_the_service_account_namespace_file(sa_file: Path, environ: dict[str, str]) -> None:
    assert cluster_credentials_namespace(None, environ, sa_file) == "from-service-account"


def test_then_the_install_namespace(tmp_path: Path) -> None:
    assert cluster_credentials_namespace(None, {}, tmp_path / "absent") == "simacan-token-operator"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert cluster_credentials_namespace(None, {}, empty) == "simacan-token-operator"


@pytest.mark.parametrize("bad", ["Ops", "a.b", "-ops", "x" * 64, "ops/../kube-system"])
def test_a_name_no_namespace_can_have_is_refused(sa_file: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid namespace name"):
        cluster_credentials_namespace(bad, {}, sa_file)
    with pytest.raises(ValueError, match="not a valid namespace name"):
        cluster_credentials_namespace(None, {"POD_NAMESPACE": bad}, sa_file)


def test_the_flag_is_parsed_and_absent_by_default() -> None:
    assert (
        parse_args(["run", "--cluster-credentials-namespace", "ops"]).cluster_credentials_namespace == "ops"
    )
    assert parse_args(["run"]).cluster_credentials_namespace is None
