"""Side by side: this operator, External Secrets Operator with a Webhook generator, and a CronJob-style loop.

What a user weighs is the tool they would install instead. Each contender runs alone on a fresh control
plane (localenv/controlplane.py) against the same fake Auth API (localenv/fakeauth.py: HTTPS,
RS256 JWTs, a short token lifetime, 60 s by default) with the same load: N token Secrets whose login
Secrets name one shared account, or each its own. Contenders run one after another, never together.

Per contender and load it measures:

- Auth API calls per token lifetime, over the steady window (after every Secret exists);
- the share of time a Secret held an expired token, and the worst lateness (token expiry to replacement),
  as seen by a reader that LISTs once and then watches the Secrets (reader.py);
- the time from the contender's start until every Secret holds a token;
- RSS (end and peak, VmHWM) and CPU of the contender's process, from /proc.

The contenders (contenders.py): `ours`; `eso-lifetime` and `eso-2/3`, External Secrets Operator
v0.16.2 (built from the Go module proxy by build_eso.sh, cached in ~/.cache) with refreshInterval
equal to the token lifetime and to two thirds of it; `cron`, a loop that logs in for every Secret every
half lifetime (cron.py).

Each run's figures are merged into RESULTS/compare.json (so runs can be made in parts), then the table is
printed and the plots are drawn from everything in that file (matplotlib: `pip install -e '.[bench]'`).
This is a benchmark for people to read, not a test. CPU on a shared machine makes timings noisy.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.compare                                  # the full matrix
    .venv/bin/python -m benchmarks.compare --contenders ours,cron --loads 1 --duration 20 --no-plots
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import secrets
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.child import REPO_ROOT, BenchmarkError, Child, Sample
from benchmarks.compare.contenders import (
    Arena,
    Contender,
    CronLoop,
    ExternalSecrets,
    Load,
    Ours,
    build_eso,
    create_all,
    secret_names,
)
from benchmarks.compare.kube import KubeClient, KubeTarget
from benchmarks.compare.reader import SecretReader
from benchmarks.runner import benchmark_parser, operator_revision, run_guarded
from localenv.controlplane import running_control_plane
from localenv.exposure import analyse
from localenv.fakeauth import FakeAuthAPI

NAMESPACE = "bench"
CONTENDERS = ("ours", "eso-lifetime", "eso-2/3", "cron")
DEFAULT_LOADS = "1,100,2000,100own"
RESULTS_FILE = "compare.json"
CRON_INTERVAL_FRACTION = 0.5  # a "*/30 * * * *" CronJob for a one-hour token


# --- one run ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    contender: str
    load: str
    load_label: str
    credentials: int
    logins: int
    lifetime: float
    notes: str
    operator_revision: str
    control_plane_seconds: float
    existed: int
    all_exist_after: float | None
    window_seconds: float
    password_calls: int
    refresh_calls: int
    calls_per_lifetime: float
    expired_share: float
    worst_lateness: float
    late_episodes: int
    secrets_with_refresh_token: int
    rss_end_kib: int
    rss_peak_kib: int
    cpu_seconds_to_all_exist: float
    cpu_percent_steady: float
    exit_code: int
    timeline: tuple[tuple[float, int, int], ...]


class ProcessSampler:
    """RSS and CPU of the contender once a second, so a crash or a leak does not go unseen."""

    def __init__(self, child: Child) -> None:
        self._child = child
        self.samples: list[tuple[float, Sample]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(1.0):
            with contextlib.suppress(OSError, BenchmarkError):
                self.samples.append((time.time(), self._child.sample()))


def populate_logins(kube: KubeClient, load: Load) -> dict[str, str]:
    """The namespace and one login Secret per account (labelled so ESO's webhook may read it)."""
    users = {f"bench-{index}@example.com": secrets.token_urlsafe(18) for index in range(load.logins)}
    kube.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    bodies = [
        {
            "metadata": {"name": f"login-{index}", "labels": {"external-secrets.io/type": "webhook"}},
            "type": "Opaque",
            "data": {
                "username": base64.b64encode(username.encode()).decode(),
                "password": base64.b64encode(password.encode()).decode(),
            },
        }
        for index, (username, password) in enumerate(users.items())
    ]
    create_all(kube, f"/api/v1/namespaces/{NAMESPACE}/secrets", bodies)
    return users


def wait_all_exist(reader: SecretReader, child: Child, expected: int, timeout: float) -> float | None:
    """Poll the reader (not the API server) until every Secret holds a token; the wall time, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.check_alive()
        if reader.holding_token() >= expected:
            return time.time()
        time.sleep(0.2)
    return None


def hold(child: Child, reader: SecretReader, seconds: float) -> None:
    """The steady window: a deliberate fixed wait, checking that the contender and the reader live."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        child.check_alive()
        reader.check()
        time.sleep(min(left, 0.5))


def run_one(contender: Contender, load: Load, options: argparse.Namespace, work_dir: Path) -> RunResult:
    revision = operator_revision()
    names = secret_names(load)
    run_dir = work_dir / f"{load.key}-{contender.log_name}"
    with contextlib.ExitStack() as stack:
        plane = stack.enter_context(running_control_plane(run_dir / "cluster"))
        target = KubeTarget(plane.server, plane.ca_file, plane.admin_token)
        kube = stack.enter_context(target.client())
        users = populate_logins(kube, load)
        fake = stack.enter_context(FakeAuthAPI(users, access_lifetime=options.lifetime, tls=True))
        arena = Arena(
            plane=plane,
            kube=kube,
            namespace=NAMESPACE,
            auth_url=fake.base_url,
            auth_port=fake.port,
            auth_ca_file=fake.ca_file,
            lifetime=options.lifetime,
            load=load,
            log_dir=run_dir,
        )
        contender.install(arena)
        reader = stack.enter_context(SecretReader(target, NAMESPACE, names))
        print(
            f"[{load.key} {contender.name}] control plane up in {plane.provision_seconds:.1f}s; "
            f"{load.credentials} credentials over {load.logins} account(s) created; starting",
            flush=True,
        )
        started_at = time.time()
        child = contender.start(arena)
        with child, ProcessSampler(child) as sampler:
            all_exist_at = wait_all_exist(reader, child, load.credentials, options.exist_timeout(load))
            at_all_exist = child.sample()
            window_from = all_exist_at or time.time()
            print(
                f"[{load.key} {contender.name}] "
                + (
                    f"all Secrets exist after {window_from - started_at:.1f}s"
                    if all_exist_at
                    else f"only {reader.holding_token()}/{load.credentials} Secrets exist by the deadline"
                )
                + f"; holding {options.duration:.0f}s",
                flush=True,
            )
            hold(child, reader, options.duration)
            ended_at = time.time()
            at_end = child.sample()
            exit_code, _ = child.stop()
        exposure = analyse(reader.sightings(), names, started_at, ended_at)
        calls = fake.calls
        window = ended_at - window_from
        in_window = sum(1 for call in calls if window_from <= call.at <= ended_at)
        return RunResult(
            contender=contender.name,
            load=load.key,
            load_label=load.label,
            credentials=load.credentials,
            logins=load.logins,
            lifetime=options.lifetime,
            notes=contender.notes(arena),
            operator_revision=revision,
            control_plane_seconds=plane.provision_seconds,
            existed=exposure.existed,
            all_exist_after=exposure.all_exist_after,
            window_seconds=window,
            password_calls=sum(1 for call in calls if call.endpoint == "password"),
            refresh_calls=sum(1 for call in calls if call.endpoint == "refresh"),
            calls_per_lifetime=in_window * options.lifetime / window if window > 0 else 0.0,
            expired_share=exposure.expired_share,
            worst_lateness=exposure.worst_lateness,
            late_episodes=exposure.late_episodes,
            secrets_with_refresh_token=reader.secrets_with_refresh_token(),
            rss_end_kib=at_end.rss_kib,
            rss_peak_kib=max([at_end.hwm_kib, *(s.hwm_kib for _, s in sampler.samples)]),
            cpu_seconds_to_all_exist=at_all_exist.cpu_seconds,
            cpu_percent_steady=100.0 * (at_end.cpu_seconds - at_all_exist.cpu_seconds) / window
            if window > 0
            else 0.0,
            exit_code=exit_code,
            timeline=exposure.timeline,
        )


# --- results ---------------------------------------------------------------------------------------


def load_results(path: Path) -> dict[str, Any]:
    """The results file: `runs` by "load contender", and `commands` (each invocation and its wall time)."""
    if not path.exists():
        return {"commands": [], "runs": {}}
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def save_results(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n")


def run_key(load: str, contender: str) -> str:
    return f"{load} {contender}"


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def render_table(runs: dict[str, dict[str, Any]]) -> str:
    header = (
        "| load | contender | Auth API calls / lifetime | expired share | worst lateness (s) "
        "| all Secrets exist after (s) | RSS end / peak (MiB) | CPU steady (% core) | CPU to all exist (s) |"
    )
    lines = [header, "|" + "---|" * 9]
    order = {name: index for index, name in enumerate(CONTENDERS)}
    ordered = sorted(runs.values(), key=lambda r: (r["logins"] > 1, r["credentials"], order[r["contender"]]))
    for run in ordered:
        existed = "" if run["all_exist_after"] is not None else f" ({run['existed']}/{run['credentials']})"
        label = Load(run["credentials"], run["logins"]).label
        lines.append(
            f"| {label} | {run['contender']} | {run['calls_per_lifetime']:.1f} "
            f"| {100 * run['expired_share']:.2f}% | {run['worst_lateness']:.1f} "
            f"| {_seconds(run['all_exist_after'])}{existed} "
            f"| {run['rss_end_kib'] / 1024:.0f} / {run['rss_peak_kib'] / 1024:.0f} "
            f"| {run['cpu_percent_steady']:.1f} | {run['cpu_seconds_to_all_exist']:.1f} |"
        )
    notes = sorted({f"{run['contender']}: {run['notes']}" for run in runs.values() if run["notes"]})
    refresh = sorted(
        {f"{run['contender']} at {run['load']}" for run in runs.values() if run["secrets_with_refresh_token"]}
    )
    lines.append("")
    lines.extend(notes)
    lines.append(
        "refresh token found in a token Secret: " + (", ".join(refresh) if refresh else "none of the runs")
    )
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------------


def parse_loads(text: str) -> list[Load]:
    loads = []
    for item in text.split(","):
        item = item.strip()
        own = item.endswith("own")
        count = int(item.removesuffix("own"))
        if count < 1:
            raise argparse.ArgumentTypeError(f"load {item!r}: need at least one credential")
        loads.append(Load(count, count if own else 1))
    return loads


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser("benchmarks.compare", __doc__)
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated, from {', '.join(CONTENDERS)} (default: all)",
    )
    parser.add_argument(
        "--loads",
        type=parse_loads,
        default=parse_loads(DEFAULT_LOADS),
        help=f"comma-separated N (sharing one account) or Nown (each its own); default {DEFAULT_LOADS}",
    )
    parser.add_argument("--lifetime", type=float, default=60.0, help="access token lifetime in s (60)")
    parser.add_argument(
        "--duration", type=float, help="steady window after all Secrets exist, in s (default 3 lifetimes)"
    )
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    parser.add_argument("--work-dir", type=Path, help="keep clusters' data and logs here (default: temp)")
    options = parser.parse_args(argv)
    options.contenders = [name.strip() for name in options.contenders.split(",") if name.strip()]
    unknown = set(options.contenders) - set(CONTENDERS)
    if unknown or not options.contenders:
        parser.error(f"unknown contenders {sorted(unknown)}; choose from {', '.join(CONTENDERS)}")
    if options.duration is None:
        options.duration = 3 * options.lifetime
    options.exist_timeout = lambda load: 120.0 + 0.3 * load.credentials
    return options


def make_contenders(names: Sequence[str]) -> list[Contender]:
    contenders: list[Contender] = []
    eso_dir: Path | None = None
    for name in names:
        if name == "ours":
            contenders.append(Ours())
        elif name == "cron":
            contenders.append(CronLoop(CRON_INTERVAL_FRACTION))
        else:
            if eso_dir is None:
                print("building External Secrets Operator if not cached (minutes, once)", flush=True)
                eso_dir = build_eso()
            fraction = 1.0 if name == "eso-lifetime" else 2.0 / 3.0
            contenders.append(ExternalSecrets(eso_dir, fraction, name))
    return contenders


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    command = " ".join(["python -m benchmarks.compare", *(sys.argv[1:] if argv is None else argv)])
    began = time.monotonic()
    results_file = options.results / RESULTS_FILE
    document = load_results(results_file)
    runs: dict[str, dict[str, Any]] = document["runs"]
    invocation = {
        "command": command,
        "seconds": 0,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    document["commands"].append(invocation)

    def measure(work_dir: Path) -> int:
        contenders = make_contenders(options.contenders)
        for load in options.loads:
            for contender in contenders:
                result = run_one(contender, load, options, work_dir)
                runs[run_key(load.key, contender.name)] = asdict(result)
                invocation["seconds"] = round(time.monotonic() - began)
                save_results(results_file, document)
        return 0

    code = run_guarded(measure, options.work_dir, "compare-")
    if code != 0:
        return code
    total = time.monotonic() - began
    print()
    print(render_table(runs))
    print(f"\n{command}: {total:.0f}s wall clock; results in {results_file}")
    if not options.no_plots:
        from benchmarks.compare.plots import draw  # matplotlib only when plotting

        for path in draw(runs, options.results):
            print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
