"""Every test the docs name exists: a guarantee in docs/security.md (or any page) that points at a
test file or a test function must point at one that is there, so renaming a test breaks the build,
not the docs' promise."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)((?:::\w+)?)(?:\[[^\]`]*\])?`|`::(\w+)(?:\[[^\]`]*\])?`")


def functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def references(text: str) -> list[tuple[str, str]]:
    """(file, function or "") for each reference; `::name` refers to the file named last before it."""
    found, last = [], ""
    for match in REFERENCE.finditer(text):
        if match.group(1):
            last = match.group(1)
            found.append((last, match.group(2).removeprefix("::")))
        elif last:
            found.append((last, match.group(3)))
    return found


def test_every_test_a_page_names_exists() -> None:
    missing = []
    for page in PAGES:
        for file, function in references(page.read_text()):
            path = REPO / file
            if not path.is_file():
                missing.append(f"{page.name}: {file}")
            elif function and function not in functions_in(path):
                missing.append(f"{page.name}: {file}::{function}")
    assert not missing, f"the docs name tests that do not exist: {missing}"


def test_the_reference_reader_follows_a_file_to_its_functions() -> None:
    text = "`tests/unit/a.py::test_x[1]`, `::test_y`, `tests/e2e/b.py` and `::test_z`"
    assert references(text) == [
        ("tests/unit/a.py", "test_x"),
        ("tests/unit/a.py", "test_y"),
        ("tests/e2e/b.py", ""),
        ("tests/e2e/b.py", "test_z"),
    ]
