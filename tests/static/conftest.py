"""The rendered install variants, built once per session."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.static.tools import REPO_ROOT, kustomize

Manifest = dict[str, Any]


def load_all(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="session")
def install_yaml() -> str:
    return kustomize(REPO_ROOT / "manifests")


@pytest.fixture(scope="session")
def namespaced_yaml() -> str:
    return kustomize(REPO_ROOT / "manifests" / "namespaced")


@pytest.fixture(scope="session")
def crds_yaml() -> str:
    return kustomize(REPO_ROOT / "crds")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "static_tools: runs checkov (2 to 5 s a run, most of it checkov starting) or kubernetes-validate's"
        " strict schemas over a whole rendered install; scripts/test --quick leaves these out, the unit"
        " stage runs them",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs the replayed image build (`replayed` in test_dockerfile.py) is a `build` test:
    scripts/test --quick leaves it out, the unit stage runs it."""
    for item in items:
        if "replayed" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.build)
