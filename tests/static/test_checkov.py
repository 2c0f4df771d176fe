"""checkov finds nothing in the image recipe or in either install, and every skip says why in the file.

checkov runs with --skip-download so it never calls its vendor's API, and from an empty directory so
no .checkov.yaml can silence a check. The namespaced install is scanned as `kubectl apply -n team-a`
would create it, since its objects deliberately name no namespace.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.static.conftest import load_all
from tests.static.tools import REPO_ROOT, require_tool

INSTALL = "python -m venv /opt/checkov && /opt/checkov/bin/pip install checkov==3.3.30 (then CHECKOV_BIN=...)"
TEAM_NAMESPACE = "team-a"
CHECKOV_TIMEOUT_SECONDS = 300

pytestmark = pytest.mark.static_tools


def checkov(target: Path, framework: str, workdir: Path) -> dict[str, Any]:
    binary = require_tool("checkov", "CHECKOV_BIN", INSTALL)
    result = subprocess.run(
        [binary, "--file", str(target), "--framework", framework, "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=CHECKOV_TIMEOUT_SECONDS,
    )
    try:
        report: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"checkov gave no JSON report (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return report


def assert_clean(report: dict[str, Any]) -> None:
    failed = [
        f"{c['check_id']} {c['check_name']} ({c['resource']})" for c in report["results"]["failed_checks"]
    ]
    assert not failed, "checkov failed:\n" + "\n".join(failed)
    summary = report["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] > 0 and summary["passed"] > 0, "checkov checked nothing"
    for skipped in report["results"]["skipped_checks"]:
        reason = (skipped["check_result"].get("suppress_comment") or "").strip()
        assert len(reason) >= 10, (
            f"{skipped['check_id']} on {skipped['resource']} is skipped without a reason"
        )


def test_dockerfile_passes_checkov(tmp_path: Path) -> None:
    assert_clean(checkov(REPO_ROOT / "Dockerfile", "dockerfile", tmp_path))


def test_cluster_install_passes_checkov(install_yaml: str, tmp_path: Path) -> None:
    rendered = tmp_path / "install.yaml"
    rendered.write_text(install_yaml)
    assert_clean(checkov(rendered, "kubernetes", tmp_path))


def test_namespaced_install_passes_checkov(namespaced_yaml: str, tmp_path: Path) -> None:
    objects = load_all(namespaced_yaml)
    for manifest in objects:
        manifest["metadata"]["namespace"] = TEAM_NAMESPACE
    rendered = tmp_path / "namespaced.yaml"
    rendered.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    assert_clean(checkov(rendered, "kubernetes", tmp_path))
