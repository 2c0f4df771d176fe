"""The operator package's modules as parsed syntax trees, for the static checks of its code."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.static.tools import REPO_ROOT

PACKAGE = REPO_ROOT / "operator" / "simacan_token_operator"


def modules(root: Path = PACKAGE, *folders: str) -> Iterator[tuple[str, ast.Module]]:
    """(path relative to `root`, parsed module) for every .py file under `root`, or under the given
    sub-folders of it, in a stable order."""
    tops = [root / folder for folder in folders] if folders else [root]
    for top in tops:
        for path in sorted(top.rglob("*.py")):
            yield path.relative_to(root).as_posix(), ast.parse(path.read_text(encoding="utf-8"), str(path))
