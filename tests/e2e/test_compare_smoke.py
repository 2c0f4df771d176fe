"""`python -m benchmarks.compare` starts, runs two contenders on their own control planes, and reports
figures.

Only that it works: a tiny load, short tokens, no External Secrets Operator build and no plots. The
comparison itself is read by people, in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_compare_runs_ours_and_the_cron_loop_and_writes_their_figures(tmp_path: Path) -> None:
    argv = [
        sys.executable,
        "-m",
        "benchmarks.compare",
        "--contenders",
        "ours,cron",
        "--loads",
        "2",
        "--lifetime",
        "8",
        "--duration",
        "8",
        "--no-plots",
        "--results",
        str(tmp_path),
    ]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, f"benchmarks.compare failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    runs = json.loads((tmp_path / "compare.json").read_text())["runs"]
    assert set(runs) == {"n2-shared ours", "n2-shared cron"}
    for run in runs.values():
        assert run["existed"] == 2, run["contender"]
        assert run["all_exist_after"] is not None
        assert run["password_calls"] >= 1
        assert run["rss_end_kib"] > 0
        assert run["exit_code"] == 0
        assert run["timeline"], "no timeline recorded"
        assert run["first_sync_rate"] is None, "two Secrets are too few for a rate"
    # Ours logs in once for both Secrets; the loop logs in for each Secret on every run.
    assert runs["n2-shared ours"]["password_calls"] == 1
    assert runs["n2-shared cron"]["password_calls"] >= 2
    assert "| 2 sharing one account | ours |" in done.stdout
