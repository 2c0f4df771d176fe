"""Finds the external linters these tests drive, and says how to install one that is missing."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def require_tool(name: str, env_var: str, install: str) -> str:
    """$<env_var> first, then PATH, then beside this interpreter (a venv that was not activated).

    A missing tool fails the test under CI=true: CI installs every one of them, and a check that
    quietly did not run is no check. Elsewhere it skips the test with a message naming the tool, so
    that a contributor with only Python (scripts/test --quick) still runs everything else.
    """
    explicit = os.environ.get(env_var)
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"{env_var}={explicit} is not an executable file")
        return explicit
    candidates = [shutil.which(name), shutil.which(name, path=str(Path(sys.executable).parent))]
    for found in candidates:
        if found:
            return found
    missing = f"{name} not found on PATH, beside {sys.executable}, or in ${env_var}; install it: {install}"
    if in_ci():
        pytest.fail(missing)
    pytest.skip(missing)


def in_ci() -> bool:
    """CI=true, as CI services (and .ci/run) set it."""
    return os.environ.get("CI", "").strip().lower() == "true"


def kustomize(directory: Path) -> str:
    """What `kubectl apply -k <directory>` would send, as YAML; default load restrictor, like apply.
    The repository's own kustomizations do not change during a run: each is rendered once a process."""
    resolved = directory.resolve()
    return _kustomized_in_repo(resolved) if resolved.is_relative_to(REPO_ROOT) else _kustomized(directory)


@functools.cache
def _kustomized_in_repo(directory: Path) -> str:
    return _kustomized(directory)


def _kustomized(directory: Path) -> str:
    kubectl = require_tool("kubectl", "KUBECTL_BIN", "bash localenv/install-deps.sh")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return result.stdout
