"""The pure layers read no clock: a pass takes the time from gathered.now and services.clock only.

So the pass can be table-tested with a fake clock, and two readings within one pass cannot
disagree. This walks the syntax of every module under reconcile/ and model/ for a call that
reads the time (time.time(), time.monotonic(), datetime.now() and their kin, however imported).
"""

from __future__ import annotations

import ast

import pytest

from tests.static.package_source import PACKAGE, modules

PURE_FOLDERS = ("reconcile", "model")

CLOCK_READERS = {
    "time": {"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns"},
    "datetime": {"now", "utcnow", "today"},
    "date": {"today"},
}
"""Module or class name -> the functions of it that read the clock."""

NO_ARGUMENT_READERS = {"time": {"gmtime", "localtime", "ctime", "asctime"}}
"""time.gmtime() and its kin read the clock only when called without an argument."""


def _last_name(node: ast.expr, imported: dict[str, tuple[str, str]]) -> str:
    """`datetime` for `datetime.datetime` or a name bound by an import to datetime; else ''."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return imported[node.id][1] if node.id in imported else node.id
    return ""


def _reads_clock(call: ast.Call, imported: dict[str, tuple[str, str]]) -> str | None:
    """The dotted name of the clock read by `call`, or None."""
    function = call.func
    if isinstance(function, ast.Name) and function.id in imported:  # from time import monotonic
        owner, name = imported[function.id]
    elif isinstance(function, ast.Attribute):
        owner, name = _last_name(function.value, imported), function.attr
    else:
        return None
    if name in CLOCK_READERS.get(owner, set()):
        return f"{owner}.{name}"
    if name in NO_ARGUMENT_READERS.get(owner, set()) and not call.args:
        return f"{owner}.{name}"
    return None


def _clock_reads(tree: ast.Module) -> list[str]:
    imported: dict[str, tuple[str, str]] = {}  # local name -> (module, name), from the imports
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime"):
            imported.update({a.asname or a.name: (node.module, a.name) for a in node.names})
        elif isinstance(node, ast.Import):
            imported.update({a.asname: ("", a.name) for a in node.names if a.asname})
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (read := _reads_clock(node, imported)) is not None:
            found.append(f"line {node.lineno}: {read}()")
    return found


def test_reconcile_and_model_read_no_clock() -> None:
    found = {path: _clock_reads(tree) for path, tree in modules(PACKAGE, *PURE_FOLDERS)}
    offenders = {path: reads for path, reads in found.items() if reads}
    assert not offenders, f"the pass must take the time from gathered.now or services.clock: {offenders}"


@pytest.mark.parametrize(
    "source",
    [
        "import time\nx = time.time()",
        "import time\nx = time.monotonic()",
        "from time import monotonic\nx = monotonic()",
        "from time import time as wall\nx = wall()",
        "import datetime\nx = datetime.datetime.now(datetime.UTC)",
        "from datetime import datetime\nx = datetime.now()",
        "from datetime import date\nx = date.today()",
        "import time\nx = time.gmtime()",
        "import time as clock\nx = clock.monotonic()",
        "import datetime as dt\nx = dt.datetime.now()",
    ],
)
def test_the_check_finds_each_way_of_reading_the_clock(source: str) -> None:
    assert _clock_reads(ast.parse(source))


@pytest.mark.parametrize(
    "source",
    [
        "import time\nx = time.gmtime(0)",
        "import datetime\nx = datetime.datetime.fromtimestamp(0, datetime.UTC)",
        "def f(now: float) -> float:\n    return now + 1",
    ],
)
def test_the_check_passes_code_that_is_given_the_time(source: str) -> None:
    assert not _clock_reads(ast.parse(source))
