"""The API pages under docs/api/ and docs/troubleshooting.md describe what the CRDs and the code define.

A field added to a CRD, a printer column changed or a reason added to reasons.py without a line in
the docs is a user who cannot find what `kubectl get` or a condition shows them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.static.tools import REPO_ROOT

API = REPO_ROOT / "docs" / "api"
PAGES = {
    "simacancredentials.auth.simacan.com.yaml": API / "simacancredential.md",
    "clustersimacancredentials.auth.simacan.com.yaml": API / "clustersimacancredential.md",
}
TROUBLESHOOTING = REPO_ROOT / "docs" / "troubleshooting.md"
OPERATOR = REPO_ROOT / "operator" / "simacan_token_operator"
LISTED_WHOLE = {"namespaceSelector", "rolloutRestartTargets"}
"""Objects and lists whose inner fields are described in their row, not row by row."""
NEVER_SHOWN = {
    "Expiring": "the routine refresh: no Event, never a condition reason",
    "AuthFailed": "the reason of the base class; every error raised is a subclass with its own",
    "RefreshRejected": "a refused refresh token falls back to one password login; that login's outcome shows",
}


def version_schema(crd_file: str) -> dict[str, Any]:
    crd = yaml.safe_load((REPO_ROOT / "crds" / crd_file).read_text())
    (version,) = crd["spec"]["versions"]
    return version  # type: ignore[no-any-return]


def section(page: Path, heading: str) -> str:
    text = page.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def first_cells(text: str) -> set[str]:
    """Backticked names in the first cell of each table row."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            names |= set(re.findall(r"`([^`]+)`", line.strip("|").split("|")[0]))
    return names


def spec_fields(properties: dict[str, Any]) -> set[str]:
    fields: set[str] = set()
    for name, schema in properties.items():
        inner = schema.get("properties")
        if inner and name not in LISTED_WHOLE:
            fields |= {f"{name}.{child}" for child in inner}
        else:
            fields.add(name)
    return fields


@pytest.mark.parametrize("crd_file", list(PAGES))
def test_every_spec_field_has_a_row(crd_file: str) -> None:
    schema = version_schema(crd_file)["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    missing = spec_fields(schema) - first_cells(section(PAGES[crd_file], "spec"))
    assert not missing, f"{PAGES[crd_file].name} has no spec row for {sorted(missing)}"


@pytest.mark.parametrize("crd_file", list(PAGES))
def test_every_status_field_has_a_row(crd_file: str) -> None:
    schema = version_schema(crd_file)["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    documented = first_cells(section(PAGES[crd_file], "status"))
    expected = {name for name in schema if name != "conditions"} | {"conditions[type=Ready]"}
    missing = expected - documented
    assert not missing, f"{PAGES[crd_file].name} has no status row for {sorted(missing)}"


@pytest.mark.parametrize("crd_file", list(PAGES))
def test_the_printer_columns_table_is_the_crds(crd_file: str) -> None:
    columns = [
        (c["name"], c["jsonPath"], str(c.get("priority", 0)))
        for c in version_schema(crd_file)["additionalPrinterColumns"]
    ]
    rows = []
    for line in section(PAGES[crd_file], "Printer columns").splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split(" | ")]
        if line.startswith("| `"):
            rows.append(tuple(cells))
    assert rows == columns


def reasons_in_code() -> set[str]:
    """Every constant of reasons.py, and the cluster kind's own Ready reason."""
    found = re.findall(r'^[A-Z_]+ = "([A-Za-z]+)"$', (OPERATOR / "model" / "reasons.py").read_text(), re.M)
    cluster = (OPERATOR / "reconcile" / "clusterstatus.py").read_text()
    return {*found, *re.findall(r'^NO_NAMESPACES = "([A-Za-z]+)"$', cluster, re.M)}


def test_every_reason_a_user_can_see_is_in_troubleshooting() -> None:
    reasons = reasons_in_code()
    assert {"TokenValid", "NoNamespaces", "RestartNotPermitted", "Issued"} <= reasons, "the parse found them"
    assert set(NEVER_SHOWN) <= reasons, "an exemption for a reason that no longer exists"
    text = TROUBLESHOOTING.read_text()
    missing = sorted(r for r in reasons - set(NEVER_SHOWN) if f"`{r}`" not in text)
    assert not missing, f"docs/troubleshooting.md does not mention {missing}"
