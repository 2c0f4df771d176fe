"""What review found defined twice is defined once, in model/, and imported everywhere else."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

from tests.static.package_source import PACKAGE, modules
from tests.static.tools import REPO_ROOT

DNS_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
"""The core of the DNS-1123 subdomain pattern, however the rest of it is written."""

KNOWN_TWINS: set[tuple[str, str]] = set()


def _names_body(target: ast.expr) -> bool:
    return isinstance(target, ast.Name) and target.id == "Body"


def _defines_body(tree: ast.Module) -> bool:
    return any(
        (isinstance(node, ast.Assign) and any(_names_body(t) for t in node.targets))
        or (isinstance(node, ast.AnnAssign) and _names_body(node.target))
        for node in tree.body
    )


def _writes_dns_pattern(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.Constant) and isinstance(node.value, str) and DNS_LABEL in node.value
        for node in ast.walk(tree)
    )


def _found(what: str, where: Path, prefix: str, check: Callable[[ast.Module], bool]) -> set[tuple[str, str]]:
    return {(what, f"{prefix}/{path}") for path, tree in modules(where) if check(tree)}


def _known(what: str) -> set[tuple[str, str]]:
    return {entry for entry in KNOWN_TWINS if entry[0] == what}


def test_the_body_alias_is_defined_once_in_model() -> None:
    found = _found("Body", PACKAGE, "simacan_token_operator", _defines_body)
    found |= _found("Body", REPO_ROOT / "tests" / "unit", "tests/unit", _defines_body)
    assert found == {("Body", "simacan_token_operator/model/body.py")} | _known("Body")


def test_the_dns_1123_rule_is_written_once_in_model() -> None:
    found = _found("DNS-1123 pattern", PACKAGE, "simacan_token_operator", _writes_dns_pattern)
    expected = {("DNS-1123 pattern", "simacan_token_operator/model/names.py")}
    assert found == expected | _known("DNS-1123 pattern")
