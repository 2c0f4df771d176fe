"""The fault report: each fault of issue 8 on a real control plane, measured from outside, one table.

    .venv/bin/python -m benchmarks.faults [--runs 3] [--only NAME ...]

Starts its own control plane (localenv/controlplane.py), applies manifests/, and runs every
scenario of localenv/scenarios/faultscenarios.py `--runs` times (the e2e tests run each once and
assert on the same figures). Counts are per run (median, with min-max when runs differ);
timings are the median of the runs. What each column means:

- Secret writes, Auth API calls, Events: from the fault until the end of the run, seen by a watch
  on the API server, by the fake Auth API, and in the namespace's Events (count included).
- no valid token: the longest time any token Secret held no unexpired token.
- recover: black hole and rollout: until the standby leads; outages: from the API's return until every
  credential is Ready with a token issued after the outage began; crashes: from the kill until the
  restarted operator has handled the refresh and the status agrees with the Secret.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.runner import verdict
from localenv.controlplane import ControlPlane, running_control_plane
from localenv.scenarios.faultkit import Figures, install
from localenv.scenarios.faultscenarios import (
    Outcome,
    api_outage,
    blackhole_leader,
    crash_during_refresh,
    rolling_upgrade,
)

Scenario = Callable[[ControlPlane, Path, Path], Outcome]
SCENARIOS: dict[str, Scenario] = {
    "blackhole": blackhole_leader,
    "rollout": rolling_upgrade,
    "apiserver": lambda plane, kc, work: api_outage(plane, kc, work, "kube-apiserver"),
    "etcd": lambda plane, kc, work: api_outage(plane, kc, work, "etcd"),
    "crash-before-secret": lambda plane, kc, work: crash_during_refresh(plane, kc, work, "secret-write"),
    "crash-before-status": lambda plane, kc, work: crash_during_refresh(plane, kc, work, "status-patch"),
}


def _count(values: Sequence[float]) -> str:
    middle = statistics.median(values)
    text = f"{middle:g}"
    return text if min(values) == max(values) else f"{text} ({min(values):g}-{max(values):g})"


def _seconds(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.1f} s"


def _extra(runs: Sequence[Figures]) -> str:
    keys = sorted(runs[0].extra)
    labels = {
        "overlap": "two leaders",
        "gap": "no leader",
        "fenced_after": "old leader fenced after",
        "new_credential": "new credential's Secret after",
        "outage": "outage",
        "extra_logins": "extra logins",
    }
    parts = []
    for key in keys:
        values = [r.extra[key] for r in runs]
        value = _count(values) if key == "extra_logins" else _seconds(values)
        parts.append(f"{labels.get(key, key)} {value}")
    return "; ".join(parts)


def table(results: dict[str, list[Outcome]]) -> str:
    lines = [
        "| fault | N | Secret writes | Auth API calls | Events | no valid token | recover | also |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for outcomes in results.values():
        runs = [o.figures for o in outcomes]
        if not runs:
            continue
        lines.append(
            f"| {runs[0].fault} | {len(runs)} | {_count([r.secret_writes for r in runs])} "
            f"| {_count([r.auth_calls for r in runs])} | {_count([r.events for r in runs])} "
            f"| {_seconds([r.longest_invalid for r in runs])} | {_seconds([r.recover for r in runs])} "
            f"| {_extra(runs)} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each fault (default 3)")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only these faults")
    parser.add_argument("--work-dir", type=Path, help="keep logs here (default: a temporary directory)")
    options = parser.parse_args(argv)
    chosen = options.only or list(SCENARIOS)
    work = options.work_dir or Path(tempfile.mkdtemp(prefix="simacan-faults-"))
    started = time.monotonic()
    results: dict[str, list[Outcome]] = {name: [] for name in chosen}
    broken: list[str] = []
    with running_control_plane(work / "control-plane") as plane:
        operator_kubeconfig = install(plane)
        for run in range(options.runs):
            for name in chosen:
                try:
                    outcome = SCENARIOS[name](plane, operator_kubeconfig, work / f"{name}-{run}")
                except Exception as error:  # one failed run is reported, the others still count
                    broken.append(f"{name} run {run + 1} failed: {type(error).__name__}: {error}")
                    print(f"{name} run {run + 1} failed: {error}", file=sys.stderr, flush=True)
                    continue
                results[name].append(outcome)
                figures = outcome.figures
                print(
                    f"[{time.monotonic() - started:5.0f}s] {name} run {run + 1}: "
                    f"writes {figures.secret_writes}, "
                    f"auth {figures.auth_calls}, events {figures.events}, "
                    f"invalid {figures.longest_invalid:.1f}s, recover {figures.recover:.1f}s {figures.extra}",
                    file=sys.stderr,
                    flush=True,
                )
                broken += [f"{name} run {run + 1}: {v}" for v in outcome.violations]
    summary = f"\n{options.runs} run(s) of each fault in {time.monotonic() - started:.0f} s; logs in {work}"
    return verdict([table(results), summary], broken)


if __name__ == "__main__":
    raise SystemExit(main())
