"""The release files (`scripts/release --render-only`) are what manifests/ renders with the image
pinned, reproducible to the byte, and pass the same checks as manifests/; the version is written once.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from localenv.release import CHECKSUMS, IMAGE_REPOSITORY, INSTALL, PIECES, Piece
from tests.static.conftest import Manifest, load_all
from tests.static.package_source import PACKAGE
from tests.static.test_checkov import INSTALL as CHECKOV_INSTALL
from tests.static.test_checkov import TEAM_NAMESPACE, assert_clean
from tests.static.test_manifests import KUBERNETES_VERSION
from tests.static.tools import REPO_ROOT, kustomize, require_tool

VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
DIGEST = "sha256:" + "0123456789abcdef" * 4
PROMETHEUS_OPERATOR_KINDS = {"PrometheusRule", "ServiceMonitor"}
"""No strict Kubernetes schema exists for these; tests/static/test_monitoring_manifests.py checks them."""
NAMESPACED = {p.file for p in PIECES if p.source == "manifests/namespaced"}
INSTALLS = [p.file for p in PIECES if p.source != "manifests/monitoring"]
SEMVER_LITERAL = re.compile(r"\d+\.\d+\.\d+([-+][0-9A-Za-z.-]*)?")  # not 0.0.0.0
VERSIONLESS_SOURCES = [
    *sorted(PACKAGE.rglob("*.py")),
    REPO_ROOT / "tests" / "e2e" / "test_install_on_node.py",
    REPO_ROOT / "localenv" / "release.py",
]
"""Python files that must take the version from pyproject.toml or the package metadata."""


def release(output: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [str(REPO_ROOT / "scripts" / "release"), "--render-only", "--output", str(output), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def without_header(text: str) -> str:
    lines = text.splitlines(keepends=True)
    body = [line for line in lines if not line.startswith("#")]
    header = lines[: len(lines) - len(body)]
    assert lines[: len(header)] == header, "comments only at the top"
    return "".join(body)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rendered with nothing on PATH but bash, dirname and kubectl (and $PYTHON): no buildah, no sudo."""
    output = tmp_path_factory.mktemp("release")
    tools = tmp_path_factory.mktemp("bin")
    kubectl = require_tool("kubectl", "KUBECTL_BIN", "bash localenv/install-deps.sh")
    (tools / "kubectl").symlink_to(kubectl)
    for name in ("bash", "dirname"):
        found = shutil.which(name)
        assert found, name
        (tools / name).symlink_to(found)
    result = release(output, path=str(tools))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(output / p.file) for p in PIECES] + [str(output / CHECKSUMS)]
    return output


def objects(rendered: Path, file: str) -> list[Manifest]:
    return load_all((rendered / file).read_text())


def test_two_renders_are_byte_identical(rendered: Path, tmp_path: Path) -> None:
    again = tmp_path / "elsewhere" / "dist"
    assert release(again).returncode == 0
    names = sorted(path.name for path in rendered.iterdir())
    assert names == sorted([*(p.file for p in PIECES), CHECKSUMS])
    assert sorted(path.name for path in again.iterdir()) == names
    for name in names:
        assert (again / name).read_bytes() == (rendered / name).read_bytes(), name


def test_the_checksums_name_every_file(rendered: Path) -> None:
    lines = (rendered / CHECKSUMS).read_text().splitlines()
    sums = {name: digest for digest, name in (line.split("  ") for line in lines)}
    assert sums == {p.file: hashlib.sha256((rendered / p.file).read_bytes()).hexdigest() for p in PIECES}


@pytest.mark.parametrize("piece", PIECES, ids=lambda p: p.file)
def test_each_file_is_its_kustomization_rendered(piece: Piece, rendered: Path) -> None:
    """Nothing but the header is added: manifests/ pins the same tag (tests/static/test_manifests.py)."""
    if piece.components:
        example = {
            "manifests": "examples/rollout-restarts",
            "manifests/namespaced": "examples/rollout-restarts-namespaced",
        }[piece.source]
        expected = kustomize(REPO_ROOT / example)
    else:
        expected = kustomize(REPO_ROOT / piece.source)
    text = (rendered / piece.file).read_text()
    assert text.startswith(f"# simacan-token-operator {VERSION}: ")
    assert without_header(text) == expected


def test_the_install_file_holds_everything_a_cluster_needs(rendered: Path) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects(rendered, INSTALL)}
    crds = {name for kind, name in kinds if kind == "CustomResourceDefinition"}
    assert crds == {"simacancredentials.auth.simacan.com", "clustersimacancredentials.auth.simacan.com"}
    assert {kind for kind, _ in kinds} == {
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "NetworkPolicy",
    }


@pytest.mark.parametrize("file", [p.file for p in PIECES if p.file in INSTALLS and "crds" not in p.file])
def test_every_deployment_runs_the_versions_image(file: str, rendered: Path) -> None:
    (deployment,) = [o for o in objects(rendered, file) if o["kind"] == "Deployment"]
    images = [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert images == [f"{IMAGE_REPOSITORY}:{VERSION}"]


def test_a_digest_pins_the_image_by_tag_and_digest(tmp_path: Path) -> None:
    result = release(tmp_path, "--digest", DIGEST)
    assert result.returncode == 0, result.stderr
    for file in INSTALLS:
        for manifest in objects(tmp_path, file):
            if manifest["kind"] == "Deployment":
                (container,) = manifest["spec"]["template"]["spec"]["containers"]
                assert container["image"] == f"{IMAGE_REPOSITORY}:{VERSION}@{DIGEST}"
    assert f"# Image: {IMAGE_REPOSITORY}:{VERSION}@{DIGEST}\n" in (tmp_path / INSTALL).read_text()


def test_a_malformed_digest_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    result = release(tmp_path / "out", "--digest", "sha256:abc")
    assert result.returncode == 2
    assert "--digest must be sha256: and 64 lowercase hex digits" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.static_tools
@pytest.mark.parametrize("file", [p.file for p in PIECES])
def test_every_object_passes_the_strict_kubernetes_schema(file: str, rendered: Path) -> None:
    checked = 0
    for manifest in objects(rendered, file):
        if manifest["kind"] in PROMETHEUS_OPERATOR_KINDS:
            continue
        what = f"{file}: {manifest['kind']}/{manifest['metadata']['name']}"
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{what}: {'.'.join(str(p) for p in error.path)}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"{what} could not be validated: {error.message}")
        checked += 1
    assert checked, f"{file}: nothing validated"


@pytest.mark.static_tools
def test_the_install_files_pass_checkov(rendered: Path, tmp_path: Path) -> None:
    """checkov, once, over the install files, the namespaced ones as `kubectl apply -n team-a` places them."""
    scanned = tmp_path / "scanned"
    scanned.mkdir()
    for file in INSTALLS:
        text = (rendered / file).read_text()
        if file in NAMESPACED:
            placed = load_all(text)
            for manifest in placed:
                manifest["metadata"]["namespace"] = TEAM_NAMESPACE
            text = yaml.safe_dump_all(placed, sort_keys=False)
        (scanned / file).write_text(text)
    binary = require_tool("checkov", "CHECKOV_BIN", CHECKOV_INSTALL)
    result = subprocess.run(
        [binary, "--directory", str(scanned), "--framework", "kubernetes", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"checkov gave no JSON report (exit {result.returncode}):\n{result.stdout}{result.stderr}"
        )
    assert_clean(report)
    files = {check["file_path"].lstrip("/") for check in report["results"]["passed_checks"]}
    # checkov has no check for a CustomResourceDefinition: the CRDs-only file passes nothing.
    expected = {file for file in INSTALLS if "crds" not in file}
    assert files == expected, f"checkov did not check every install file: {sorted(files)}"


# --- the version, written once ------------------------------------------------------------------------


@pytest.mark.parametrize("path", VERSIONLESS_SOURCES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_no_python_source_writes_a_version_literal(path: Path) -> None:
    strings = [
        node.value
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    literals = [text for text in strings if SEMVER_LITERAL.fullmatch(text)]
    assert not literals, f"{path.relative_to(REPO_ROOT)} writes {literals}: read pyproject.toml's version"


def test_the_dockerfile_names_the_version_wherever_it_names_a_tag() -> None:
    """ARG VERSION is checked in test_dockerfile.py; the build command in its header too."""
    tags = re.findall(r"simacan-token-operator:(\S+)", (REPO_ROOT / "Dockerfile").read_text())
    assert tags and set(tags) == {VERSION}


def test_version_prints_what_pyproject_says() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simacan_token_operator", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == VERSION
