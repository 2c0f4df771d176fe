"""One harness: the pieces that every local process shares are defined once, in localenv/processes.py,
and the tests, the demo and the benchmarks import them rather than copy them (issue 23).

Found by what the code does, not only by name: a function that asks the kernel for a port (binds port
0 and reads it back), a signal handler that raises SystemExit(128 + signum), a list that spells the
operator's command line. Also: benchmarks/ never imports tests/, tests/ never imports benchmarks/,
and nothing patches sys.path.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

from tests.static.tools import REPO_ROOT

HARNESS = ("localenv", "benchmarks", "tests")
PROCESSES = "localenv/processes.py"


def _trees(root: Path, folders: tuple[str, ...] = HARNESS) -> Iterator[tuple[str, ast.Module]]:
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            yield path.relative_to(root).as_posix(), _parsed(path)


@functools.cache
def _parsed(path: Path) -> ast.Module:
    """Each file is parsed once for all the checks here."""
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


@functools.cache
def _walked(node: ast.AST) -> list[ast.AST]:
    """Every node of a file or function, listed once for all the checks here (ast.walk is slow)."""
    return list(ast.walk(node))


def _functions(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _is_zero(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value == 0


def _calls(function: ast.AST, method: str) -> list[ast.Call]:
    return [
        node
        for node in _walked(function)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == method
    ]


def picks_a_free_port(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Binds a socket to port 0 and returns what the kernel chose (a server that listens is no such
    helper: it keeps its socket, so it never returns the number from the function that bound it)."""
    binds_port_zero = any(
        call.args
        and isinstance(call.args[0], ast.Tuple)
        and len(call.args[0].elts) == 2
        and _is_zero(call.args[0].elts[1])
        for call in _calls(function, "bind")
    )
    return binds_port_zero and any(
        isinstance(node, ast.Return) and node.value is not None and _calls(node.value, "getsockname")
        for node in _walked(function)
    )


def exits_on_signal(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """`raise SystemExit(128 + signum)`: a handler that turns a signal into an unwinding exit."""
    for node in _walked(function):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            call = node.exc
            if (
                isinstance(call.func, ast.Name)
                and call.func.id == "SystemExit"
                and call.args
                and isinstance(call.args[0], ast.BinOp)
                and isinstance(call.args[0].left, ast.Constant)
                and call.args[0].left.value == 128
            ):
                return True
    return False


def _is_operator_module(node: ast.expr) -> bool:
    return (isinstance(node, ast.Constant) and node.value == "simacan_token_operator") or (
        isinstance(node, ast.Name) and node.id == "OPERATOR_MODULE"
    )


def spells_the_operator_command(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A list with `simacan_token_operator` followed by `run`: `python -m simacan_token_operator run`."""
    for node in _walked(function):
        if isinstance(node, ast.List | ast.Tuple):
            for first, second in pairwise(node.elts):
                if _is_operator_module(first) and isinstance(second, ast.Constant) and second.value == "run":
                    return True
    return False


def definitions(
    root: Path, check: Callable[[ast.FunctionDef | ast.AsyncFunctionDef], bool]
) -> set[tuple[str, str]]:
    """(file, function) of every function under localenv/, benchmarks/ and tests/ that `check` finds;
    a nested function counts only once, as itself (its enclosing ones are not reported for it)."""
    found: set[tuple[str, str]] = set()
    for path, tree in _trees(root):
        for function in (n for n in _walked(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)):
            if not check(function):
                continue
            body = ast.Module(body=function.body, type_ignores=[])
            if not any(check(f) for f in _functions(body) if f is not function):
                found.add((path, function.name))
    return found


def test_one_free_port_helper() -> None:
    assert definitions(REPO_ROOT, picks_a_free_port) == {(PROCESSES, "free_ports")}


def test_one_sigterm_handler() -> None:
    assert definitions(REPO_ROOT, exits_on_signal) == {(PROCESSES, "exit_on_sigterm")}


def test_one_function_builds_the_operator_command_line() -> None:
    assert definitions(REPO_ROOT, spells_the_operator_command) == {(PROCESSES, "operator_argv")}


def _imported_packages(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in _walked(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def crossings(root: Path) -> set[tuple[str, str]]:
    """(file, package) where benchmarks/ imports tests or tests/ imports benchmarks; localenv/ may
    import neither: both build on it."""
    forbidden = {"benchmarks": {"tests"}, "tests": {"benchmarks"}, "localenv": {"tests", "benchmarks"}}
    return {
        (path, package)
        for path, tree in _trees(root)
        for package in _imported_packages(tree) & forbidden[path.split("/")[0]]
    }


def test_benchmarks_and_tests_do_not_import_each_other() -> None:
    assert crossings(REPO_ROOT) == set()


def sys_path_patches(root: Path) -> set[str]:
    """Files that change sys.path (insert, append, assignment): code runs as `python -m` instead."""
    found: set[str] = set()
    for path, tree in _trees(root, (*HARNESS, "operator", "scripts")):
        for node in _walked(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "path"
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
            ):
                found.add(path)
    return found


def test_nothing_patches_sys_path() -> None:
    assert sys_path_patches(REPO_ROOT) == set()


def serve_forever_loops(root: Path) -> set[str]:
    """Files that run a socketserver loop (serve_forever) themselves instead of localenv.loopback."""
    return {
        path
        for path, tree in _trees(root)
        for node in _walked(tree)
        if isinstance(node, ast.Attribute) and node.attr == "serve_forever"
    }


def test_scripted_servers_are_served_by_localenv_loopback() -> None:
    """Its 10 ms shutdown poll: serve_forever's default of 0.5 s cost every test that stopped one."""
    assert serve_forever_loops(REPO_ROOT) == {"localenv/loopback.py", "localenv/fakeauth.py"}
