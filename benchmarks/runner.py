"""How a benchmark runs: in a work directory it removes (unless asked to keep one), with SIGTERM and
Ctrl-C unwinding everything it started, and with the operator's commit noted beside its figures."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from benchmarks.child import BenchmarkError
from localenv.processes import exit_on_sigterm

REPO_ROOT = Path(__file__).resolve().parents[1]


def benchmark_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line of `python -m <module>`, with the module's docstring as its help."""
    return argparse.ArgumentParser(
        prog=f"python -m {module}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


@contextlib.contextmanager
def work_directory(requested: Path | None, prefix: str) -> Iterator[Path]:
    """`requested`, kept afterwards; else a temporary directory, removed however the run ends."""
    if requested is not None:
        requested.mkdir(parents=True, exist_ok=True)
        yield requested.resolve()
        return
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_guarded(body: Callable[[Path], int], requested: Path | None, prefix: str) -> int:
    """`body(work_dir)`'s exit status, or 2 when the benchmark itself failed and 130 on Ctrl-C; SIGTERM
    exits with 143. Both signals unwind the context managers, which stop every child."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    # Ctrl-C must clean up even when started from a shell that ignores SIGINT in background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with work_directory(requested, prefix) as work_dir:
            return body(work_dir)
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; everything it started has been stopped", file=sys.stderr)
        return 130


def verdict(report: Sequence[str], violations: Sequence[str]) -> int:
    """Print the report, then each broken promise on a VIOLATION line; exit status 1 if there is one."""
    for line in report:
        print(line)
    for line in violations:
        print(f"VIOLATION {line}")
    return 1 if violations else 0


def operator_revision() -> str:
    """Which operator code was measured: the commit, and whether operator/ had uncommitted changes."""
    git = shutil.which("git")
    if git is None:
        return "unknown (no git)"

    def output(*args: str) -> str:
        done = subprocess.run(  # noqa: S603 - git from PATH with fixed arguments
            [git, "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = output("rev-parse", "--short", "HEAD") or "unknown"
    dirty = output("status", "--porcelain", "--", "operator")
    return f"{commit} + uncommitted changes in operator/" if dirty else commit
