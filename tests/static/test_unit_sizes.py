"""Every unit of the operator fits on a screen: no class over 200 lines, no function over 80.

A span is `end_lineno - lineno + 1` of the AST node (decorators not counted, docstrings and
comments counted). Methods and nested functions count as functions of their own.
"""

from __future__ import annotations

import ast
import textwrap

from tests.static.package_source import PACKAGE, modules

MAX_CLASS_LINES = 200
MAX_FUNCTION_LINES = 80

KNOWN_OVERSIZED: set[str] = set()
"""Units allowed over the limits for now, each with the issue that splits it (none today)."""


def _oversized(path: str, tree: ast.Module) -> dict[str, int]:
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            kind, limit = "class", MAX_CLASS_LINES
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            kind, limit = "def", MAX_FUNCTION_LINES
        else:
            continue
        assert node.end_lineno is not None
        span = node.end_lineno - node.lineno + 1
        if span > limit:
            found[f"{path}: {kind} {node.name}"] = span
    return found


def test_no_class_over_200_lines_and_no_function_over_80() -> None:
    oversized: dict[str, int] = {}
    for path, tree in modules(PACKAGE):
        oversized.update(_oversized(path, tree))
    unexpected = {unit: span for unit, span in oversized.items() if unit not in KNOWN_OVERSIZED}
    assert not unexpected, (
        f"split these (lines per unit; limits {MAX_CLASS_LINES}/{MAX_FUNCTION_LINES}): {unexpected}"
    )
    fitting = sorted(KNOWN_OVERSIZED - oversized.keys())
    assert not fitting, f"these fit now: remove them from KNOWN_OVERSIZED: {fitting}"


def _function(name: str, lines: int) -> str:
    """A function of exactly `lines` lines."""
    return f"def {name}():\n" + "".join(f"    x{i} = {i}\n" for i in range(lines - 1))


def test_the_check_measures_spans_and_sees_methods_and_nested_functions() -> None:
    limit = MAX_FUNCTION_LINES
    assert _oversized("x.py", ast.parse(_function("f", limit))) == {}
    assert _oversized("x.py", ast.parse(_function("f", limit + 1))) == {"x.py: def f": limit + 1}
    method = "class C:\n" + textwrap.indent(
        f"def m(self):\n{textwrap.indent(_function('inner', limit + 1), '    ')}", "    "
    )
    assert _oversized("x.py", ast.parse(method)) == {"x.py: def m": limit + 2, "x.py: def inner": limit + 1}
    large = "class C:\n" + "".join(f"    y{i} = {i}\n" for i in range(MAX_CLASS_LINES))
    assert _oversized("x.py", ast.parse(large)) == {"x.py: class C": MAX_CLASS_LINES + 1}
