"""Every row of the "Bad input and how it is handled" table (docs/troubleshooting.md) names tests that exist.

A row without a test is a promise nobody checks; a renamed test would silently orphan its row.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "troubleshooting.md"
SECTION = "## Bad input and how it is handled"


def _section() -> str:
    """From the section's heading to the next heading of its level, or to the end of the page."""
    text = PAGE.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else len(text)]


def _references() -> dict[str, list[str]]:
    """Test files (space-separated) -> node ids (function[param]) in the last cell of their table's rows."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in _section().splitlines():
        files = re.findall(r"`(tests/[\w/]+\.py)`", line)
        if files and not line.startswith("|"):
            current = " ".join(files)  # a table may draw on several files
            found[current] = []
        elif line.startswith("| ") and not line.startswith(("| input", "| answer", "|---")):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            assert current, f"a row before any test file is named: {line}"
            ids = re.findall(r"`(test_[^`]+)`", cells[-1])
            assert ids, f"a row without a test: {line}"
            found[current].extend(ids)
    return found


def _collected(paths: list[str]) -> set[str]:
    """Node ids as pytest collects them (one run for all files: collection is the slow part;
    --assert=plain: rewriting the asserts of tests that are only collected is wasted work)."""
    collect = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*collect, "--assert=plain", *paths],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return set(result.stdout.splitlines())


def test_every_bad_input_row_names_a_test_that_exists() -> None:
    references = _references()
    assert {"tests/e2e/test_bad_input_schema.py", "tests/integration/test_bad_input.py"} <= set(references)
    collected = _collected(sorted({path for paths in references for path in paths.split()}))
    missing = [
        f"{paths}::{id}"
        for paths, ids in references.items()
        for id in ids
        if not any(f"{path}::{id}" in collected for path in paths.split())
    ]
    assert not missing, f"{PAGE.name} rows name tests that do not exist: {missing}"


def test_the_table_has_at_least_forty_rows() -> None:
    rows = [line for line in _section().splitlines() if line.startswith("| `") or line.startswith("| ")]
    rows = [row for row in rows if not row.startswith(("| input", "| answer", "|---"))]
    assert len(rows) >= 40, len(rows)
