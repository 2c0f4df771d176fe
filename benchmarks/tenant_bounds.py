"""The tenant-bounds report (issue 19): hostile tenants against one operator on a real control plane.

    .venv/bin/python -m benchmarks.tenant_bounds [--only NAME ...] [--kill-above-mib 2048]

Starts its own control plane (localenv/controlplane.py), applies manifests/, starts one operator
watching all namespaces and a neighbour credential on 10 s tokens (localenv/scenarios/tenant_arena.py),
then runs the attacks of localenv/scenarios/tenant_attacks.py; tests/e2e/test_tenant_bounds.py runs the
same code and asserts on the same figures:

- template-bomb: a 40 KiB self-made JWT in the tenant's own token Secret, then 16 data templates of
  4,096 characters made of {{ .token }}: they pass the CRD and render to hundreds of MiB.
- fat-deployments: 60 Deployments of ~1 MiB (replicas 0) reading the token through an env var,
  then a credential beside them (the stale-consumer check looks at all of them).
- bounded-credentials: 50 SimacanCredentials with every bounded field at its bound plus ~256 KiB of
  metadata annotations (every other one a 64 KiB refresh-requested-at); half of them with data
  templates exactly at the rendered-data bound, half with each template at its own bound.

Columns: the operator's RSS just before the attack, its peak RSS during it (VmHWM, reset through
/proc/PID/clear_refs), the difference (the promise: under 64 MiB), operator processes that ended
during the attack, the neighbour's longest stretch without an unexpired token (the promise: 0), and
the offending credential's Ready reason. A guard SIGKILLs the operator past --kill-above-mib RSS.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.runner import benchmark_parser, verdict
from localenv.controlplane import running_control_plane
from localenv.scenarios.faultkit import install
from localenv.scenarios.tenant_arena import KILL_ABOVE_MIB, Arena, Figures, table
from localenv.scenarios.tenant_attacks import ATTACKS


def main(argv: Sequence[str] | None = None) -> int:
    parser = benchmark_parser("benchmarks.tenant_bounds", __doc__)
    parser.add_argument("--only", action="append", choices=sorted(ATTACKS), help="run only these attacks")
    parser.add_argument(
        "--separately",
        action="store_true",
        help="a fresh operator and neighbour for each attack (default: one for all, as the e2e test): "
        "an earlier attack's memory, kept by the process, then cannot hide a later one's",
    )
    parser.add_argument(
        "--kill-above-mib",
        type=float,
        default=KILL_ABOVE_MIB,
        help=f"SIGKILL the operator past this RSS (default {KILL_ABOVE_MIB:.0f})",
    )
    parser.add_argument("--work-dir", type=Path, help="keep logs here (default: a temporary directory)")
    options = parser.parse_args(argv)
    chosen = options.only or list(ATTACKS)
    groups = [[name] for name in chosen] if options.separately else [chosen]
    work = options.work_dir or Path(tempfile.mkdtemp(prefix="simacan-tenant-bounds-"))
    started = time.monotonic()
    results: list[Figures] = []
    neighbours: list[str] = []
    broken: list[str] = []
    with running_control_plane(work / "control-plane") as plane:
        operator_kubeconfig = install(plane)
        for index, group in enumerate(groups):
            arena_dir = work / f"arena-{index}"
            with Arena(
                plane.admin_kubeconfig, operator_kubeconfig, arena_dir, options.kill_above_mib
            ) as arena:
                for name in group:
                    try:
                        figures = ATTACKS[name](arena)
                    except Exception as error:  # one broken attack is reported, the others still run
                        broken.append(f"{name} failed: {type(error).__name__}: {error}")
                        print(f"{name} failed: {error}", file=sys.stderr, flush=True)
                        continue
                    results.append(figures)
                    print(
                        f"[{time.monotonic() - started:4.0f}s] {figures.summary()}",
                        file=sys.stderr,
                        flush=True,
                    )
                    broken += [f"{figures.attack}: {violation}" for violation in figures.violations]
                elapsed = time.time() - arena.started_at
                invalid = arena.neighbour_invalid_seconds(arena.started_at)
                refreshes = arena.neighbour_refreshes(arena.started_at)
                neighbours.append(
                    f"{', '.join(group)}: neighbour (10 s tokens) over {elapsed:.0f} s: {refreshes} "
                    f"refreshes, longest without a valid token {invalid:.1f} s; operator processes started: "
                    f"{arena.operator.runs}; log {arena.operator.log_path}"
                )
                if invalid > 0:
                    broken.append(
                        f"{', '.join(group)}: the neighbour held no valid token for {invalid:.1f} s"
                    )
    summary = f"{len(results)} attack(s) in {time.monotonic() - started:.0f} s; logs in {work}"
    return verdict([table(results), "\n" + "\n".join(neighbours), summary], broken)


if __name__ == "__main__":
    raise SystemExit(main())
