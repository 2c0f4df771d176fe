"""The local image build's naming, checked without building (the e2e tier builds and runs the image).

`localenv/base-image.sh` must store its stand-in under the name buildah resolves the Dockerfile's FROM to,
read from the Dockerfile itself, or `buildah bud --pull=never` fails only once a build is attempted.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from localenv.operator_image import BUILD_IMAGE_SCRIPT, OPERATOR_IMAGE_REPOSITORY
from tests.static.dockerfile import stages
from tests.static.tools import REPO_ROOT

BASE_IMAGE_SCRIPT = REPO_ROOT / "localenv" / "base-image.sh"
DOCKERFILE = REPO_ROOT / "Dockerfile"


def _print_reference(dockerfile: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if dockerfile is not None:
        env["SIMACAN_DOCKERFILE"] = str(dockerfile)
    return subprocess.run(
        ["bash", str(BASE_IMAGE_SCRIPT), "--print-reference"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def test_stand_in_takes_the_name_of_the_dockerfiles_base_image() -> None:
    written = stages(DOCKERFILE.read_text())[0].image
    assert "/" not in written, "this test expects a Docker Hub official image such as python:<tag>"
    result = _print_reference()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"docker.io/library/{written}"


@pytest.mark.parametrize(
    ("from_line", "expected"),
    [
        ("FROM python:3.11-slim AS base", "docker.io/library/python:3.11-slim"),
        ("FROM --platform=linux/amd64 example/tool:1", "docker.io/example/tool:1"),
        ("from registry.example:5000/team/base:2 as base", "registry.example:5000/team/base:2"),
        ("FROM registry.example:5000/team/base", "registry.example:5000/team/base:latest"),
        ("FROM docker.io/python:3.11", "docker.io/library/python:3.11"),
        ("FROM localhost/base", "localhost/base:latest"),
    ],
)
def test_short_names_are_normalised_as_buildah_does(tmp_path: Path, from_line: str, expected: str) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"# comment\n{from_line}\nRUN true\nFROM scratch\n")
    result = _print_reference(dockerfile)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_a_digest_pinned_base_is_refused_with_the_reason(tmp_path: Path) -> None:
    """The release recipe will pin a digest; no stand-in can match it: say so, not fail later."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.11.17-slim-bookworm@sha256:" + "0" * 64 + " AS base\n")
    result = _print_reference(dockerfile)
    assert result.returncode != 0
    assert "digest" in result.stderr


def test_build_script_tags_the_repository_the_python_api_names() -> None:
    found = re.search(r"^repository=(\S+)$", BUILD_IMAGE_SCRIPT.read_text(), re.M)
    assert found is not None, f"no repository= line in {BUILD_IMAGE_SCRIPT}"
    assert found.group(1) == OPERATOR_IMAGE_REPOSITORY
