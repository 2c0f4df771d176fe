"""`scripts/demo` as a user runs it: tokens and a refresh within seconds, and nothing left behind.

Runs `python -m localenv.demo` in .venv (what scripts/demo runs once setup is done) with 6 s
tokens, so that a refresh happens within a short `--for`. CI runs the full `scripts/demo --for 90`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from localenv.polling import eventually

REPO = Path(__file__).resolve().parents[2]


def demo(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SIMACAN_USERNAME", "SIMACAN_PASSWORD")}
    return subprocess.Popen(
        [sys.executable, "-m", "localenv.demo", *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def started_pids(output: str) -> list[int]:
    """Every process the demo says it started: the control plane's and the operator."""
    plane = re.search(r"\(pids: ([^)]*)\)", output)
    operator = re.search(r"operator started \(pid (\d+)\)", output)
    assert plane and operator, output
    return [int(p.split()[-1]) for p in plane.group(1).split(",")] + [int(operator.group(1))]


def temp_paths(output: str) -> list[Path]:
    work = re.search(r"log: (/\S+)/operator\.log", output)
    ca = re.search(r"its own CA: (/\S+)\)", output)
    assert work and ca, output
    return [Path(work.group(1)), Path(ca.group(1)).parent]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo_for_seconds_sees_tokens_and_a_refresh_and_cleans_up() -> None:
    process = demo("--for", "15", "--token-lifetime", "6")
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 0, output
    assert "PASS: 2 credentials got tokens" in output
    assert re.search(r"time to first token: [\d.]+s since scripts/demo started", output)
    assert "KUBECONFIG=" in output and "kubectl get simacancredentials -A" in output
    assert re.search(r"fleet-api\s+True\s+TokenValid", output)
    assert "Issued" in output, "the operator's Events are shown"
    assert not [pid for pid in started_pids(output) if alive(pid)]
    assert not [path for path in temp_paths(output) if path.exists()]


def test_ctrl_c_stops_everything_the_demo_started_and_removes_its_files() -> None:
    process = demo()  # no --for: runs until interrupted; stdout is not a terminal, so plain lines
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or []), daemon=True)
    reader.start()
    try:
        eventually(
            lambda: any(re.search(r"fleet-api\s+True\s+TokenValid", line) for line in lines),
            timeout=120,
            what="the demo showing fleet-api Ready",
        )
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the demo did not stop within 60 s of Ctrl-C; it printed:\n" + "".join(lines))
        assert code == 130
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=10)
    output = "".join(lines)
    assert "Ctrl-C: stopping" in output
    assert not [pid for pid in started_pids(output) if alive(pid)]
    assert not [path for path in temp_paths(output) if path.exists()]
