"""Side by side: this operator, the scripts people write instead, and External Secrets Operator.

What a user weighs is the tool they would install instead. Each contender runs alone on a fresh control
plane (localenv/controlplane.py) against the same fake Auth API (localenv/fakeauth.py: HTTPS,
RS256 JWTs, a short token lifetime) with the same load: N token Secrets whose login Secrets name one
shared account, or each its own. Contenders run one after another, never together.

Per contender and load it measures (issue 22, item 5):

- requests per token Secret write, by verb and resource, from kube-apiserver's own
  `apiserver_request_total` (localenv/apiserver_requests.py): the window starts 5 s after the last
  token Secret exists and lasts 4 token lifetimes; the denominator is the 2xx POST + PUT + PATCH
  of secrets;
- the time from the contender's start until every Secret holds a token;
- the share of time a Secret held an expired token, and the worst lateness (token expiry to
  replacement), as seen by a reader that LISTs once and then watches the Secrets (reader.py);
- Auth API calls per token lifetime, over the window;
- RSS (end and peak, VmHWM) and CPU of the contender's process, from /proc;
- with --idle-kopf, before `ours` starts: the RSS of an idle kopf process watching the same
  SimacanCredentials (benchmarks/idle_kopf_operator.py), and ours beside it (target <= 1.5x);
- with --busy K: the same under CPU contention, K CPU-bound processes running from before the
  contender starts to the end of its run (issue 22, item 3: two on a 2-core machine, at most
  0.1 % expired and a worst lateness of at most 1 s).

The contenders (contenders.py): `ours`; `loop`, the plain loop (one login per account per half
lifetime, a PUT of every Secret, 8 at a time) and `cron`, a login and a server-side apply per Secret
per half lifetime (both cron.py); `eso-lifetime` and `eso-2/3`, External Secrets Operator v0.16.2
with refreshInterval equal to the token lifetime and to two thirds of it, when its build is cached
(build_eso.sh; --build-eso builds it, several minutes, once).

Each run's figures are merged into RESULTS/compare.json (so runs can be made in parts); the tables of
this invocation's runs are printed, and the plots are drawn from everything in that file (matplotlib:
`pip install -e '.[bench]'`). This is a benchmark for people to read, not a test. CPU on a shared
machine makes timings noisy: the load average is recorded beside each run.

Loads: N (sharing one account) or Nown (each its own account), optionally @L for that load's token
lifetime in seconds (else --lifetime).

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.compare                                  # 200@30,2000@60, all
    .venv/bin/python -m benchmarks.compare --contenders ours --loads 10000@300 --idle-kopf
    .venv/bin/python -m benchmarks.compare --contenders ours,cron --loads 1 --duration 20 --no-plots
    .venv/bin/python -m benchmarks.compare --contenders ours,loop --loads 2000@60 --busy 2

With the dependencies the image ships (the dev venv's test packages make the operator import more):

    python3 -m venv /tmp/rt && /tmp/rt/bin/pip install --no-deps --require-hashes -r requirements.lock
    PYTHONPATH=$PWD/operator .venv/bin/python -m benchmarks.compare --python /tmp/rt/bin/python ...
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
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
    cached_eso,
    create_all,
    secret_names,
)
from benchmarks.compare.kube import KubeClient, KubeTarget
from benchmarks.compare.reader import SecretReader
from benchmarks.footprint import TARGET_RATIO, measure_floor
from benchmarks.runner import benchmark_parser, operator_revision, run_guarded
from localenv.apiserver_requests import (
    SETTLE_AFTER_LAST_SECRET,
    WINDOW_LIFETIMES,
    from_json,
    increase,
    per_write_rows,
    request_counts,
    secret_gets,
    secret_writes,
    to_json,
)
from localenv.controlplane import running_control_plane
from localenv.exposure import analyse
from localenv.fakeauth import FakeAuthAPI

NAMESPACE = "bench"
CONTENDERS = ("ours", "loop", "cron", "eso-lifetime", "eso-2/3")
ESO_CONTENDERS = ("eso-lifetime", "eso-2/3")
DEFAULT_LOADS = "200@30,2000@60"
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
    # since issue 22 item 5 (absent from older runs in the results file)
    started: str = ""
    requests: dict[str, int] | None = None
    idle_kopf_rss_kib: int | None = None
    load_average_start: str = ""
    load_average_end: str = ""
    first_sync_rate: float | None = None
    busy: int = 0
    """CPU-bound processes running beside the run (--busy)."""


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


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """`count` processes that keep a core each busy until the block ends."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


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


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` shows them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def idle_kopf_rss(arena: Arena, options: argparse.Namespace) -> int:
    """RSS (KiB) of an idle kopf process watching the arena's SimacanCredentials, once it has seen
    them all and settled: footprint.py's floor, on the contender's own control plane."""
    floor_options = argparse.Namespace(
        python=options.python, timeout=options.exist_timeout(arena.load), settle=options.settle
    )
    floor = measure_floor(arena.plane, arena.log_dir, arena.load.credentials, floor_options)
    print(
        f"[{arena.load.key}] idle kopf saw all {arena.load.credentials} in {floor.seconds_to_all_seen:.1f}s; "
        f"RSS {floor.settled.rss_kib / 1024:.0f} MiB after {options.settle:.0f}s",
        flush=True,
    )
    return floor.settled.rss_kib


def run_one(contender: Contender, load: Load, options: argparse.Namespace, work_dir: Path) -> RunResult:
    revision = operator_revision()
    began = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    average_at_start = load_average()
    names = secret_names(load)
    lifetime = load.lifetime or options.lifetime
    duration = options.duration or WINDOW_LIFETIMES * lifetime
    run_dir = work_dir / f"{load.key}-{contender.log_name}"
    with contextlib.ExitStack() as stack:
        plane = stack.enter_context(running_control_plane(run_dir / "cluster"))
        target = KubeTarget(plane.server, plane.ca_file, plane.admin_token)
        kube = stack.enter_context(target.client())
        users = populate_logins(kube, load)
        fake = stack.enter_context(FakeAuthAPI(users, access_lifetime=lifetime, tls=True))
        arena = Arena(plane, kube, NAMESPACE, fake, lifetime, load, log_dir=run_dir)
        contender.install(arena)
        floor_kib = (
            idle_kopf_rss(arena, options) if options.idle_kopf and isinstance(contender, Ours) else None
        )
        stack.enter_context(busy_processes(options.busy))
        reader = stack.enter_context(SecretReader(target, NAMESPACE, names))
        print(
            f"[{load.key} {contender.name}] control plane up in {plane.provision_seconds:.1f}s; "
            f"{load.credentials} credentials over {load.logins} account(s), {lifetime:g}s tokens; starting",
            flush=True,
        )
        started_at = time.time()
        child = contender.start(arena)
        with child, ProcessSampler(child) as sampler:
            all_exist_at = wait_all_exist(reader, child, load.credentials, options.exist_timeout(load))
            at_all_exist = child.sample()
            print(
                f"[{load.key} {contender.name}] "
                + (
                    f"all Secrets exist after {all_exist_at - started_at:.1f}s"
                    if all_exist_at
                    else f"only {reader.holding_token()}/{load.credentials} Secrets exist by the deadline"
                )
                + f"; counting requests over {duration:.0f}s from {SETTLE_AFTER_LAST_SECRET:g}s on",
                flush=True,
            )
            hold(child, reader, SETTLE_AFTER_LAST_SECRET)
            window_from = time.time()
            before = request_counts(plane)
            hold(child, reader, duration)
            after = request_counts(plane)
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
            lifetime=lifetime,
            notes=contender.notes(arena),
            operator_revision=revision,
            control_plane_seconds=plane.provision_seconds,
            existed=exposure.existed,
            all_exist_after=exposure.all_exist_after,
            window_seconds=window,
            password_calls=sum(1 for call in calls if call.endpoint == "password"),
            refresh_calls=sum(1 for call in calls if call.endpoint == "refresh"),
            calls_per_lifetime=in_window * lifetime / window if window > 0 else 0.0,
            expired_share=exposure.expired_share,
            worst_lateness=exposure.worst_lateness,
            late_episodes=exposure.late_episodes,
            secrets_with_refresh_token=reader.secrets_with_refresh_token(),
            rss_end_kib=at_end.rss_kib,
            rss_peak_kib=max([at_end.hwm_kib, *(s.hwm_kib for _, s in sampler.samples)]),
            cpu_seconds_to_all_exist=at_all_exist.cpu_seconds,
            cpu_percent_steady=100.0
            * (at_end.cpu_seconds - at_all_exist.cpu_seconds)
            / (ended_at - all_exist_at)
            if all_exist_at and ended_at > all_exist_at
            else 0.0,
            exit_code=exit_code,
            timeline=exposure.timeline,
            started=began,
            requests=to_json(increase(before, after)),
            idle_kopf_rss_kib=floor_kib,
            load_average_start=average_at_start,
            load_average_end=load_average(),
            first_sync_rate=exposure.first_sync_rate,
            busy=options.busy,
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


def _ordered(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    order = {name: index for index, name in enumerate(CONTENDERS)}
    return sorted(
        runs.values(),
        key=lambda r: (
            r["logins"] > 1,
            r["credentials"],
            r["lifetime"],
            order.get(r["contender"], len(order)),
        ),
    )


def _per_write(run: Mapping[str, Any]) -> tuple[str, str, str]:
    """Requests per Secret write, Secret GETs per write, and Secret writes per credential per lifetime."""
    if run.get("requests") is None:
        return "-", "-", "-"  # a run from before the request counts
    counts = from_json(run["requests"])
    writes = secret_writes(counts)
    if not writes:
        return "no writes", "-", "0"
    lifetimes = run["window_seconds"] / run["lifetime"]
    return (
        f"{sum(counts.values()) / writes:.2f}",
        f"{secret_gets(counts) / writes:.2f}",
        f"{writes / (run['credentials'] * lifetimes):.2f}",
    )


def busy_label(run: Mapping[str, Any]) -> str:
    return f", {run['busy']} busy" if run.get("busy") else ""


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0f}"


def render_table(runs: dict[str, dict[str, Any]]) -> str:
    """One row per load and contender: the figures issue 22 asks for side by side."""
    header = (
        "| load | contender | token lifetime (s) | requests per Secret write | Secret GETs per write "
        "| Secret writes per credential per lifetime | all Secrets exist after (s) "
        "| first-sync Secret writes/s (middle 80 %) | expired share "
        "| worst lateness (s) | RSS end / peak (MiB) | Auth API calls / lifetime | CPU steady (% core) "
        "| load average (1 min) |"
    )
    lines = [header, "|" + "---|" * 14]
    for run in _ordered(runs):
        existed = "" if run["all_exist_after"] is not None else f" ({run['existed']}/{run['credentials']})"
        label = Load(run["credentials"], run["logins"]).label + busy_label(run)
        per_write, gets, writes = _per_write(run)
        averages = " to ".join(
            a.split()[0] for a in (run.get("load_average_start"), run.get("load_average_end")) if a
        )
        lines.append(
            f"| {label} | {run['contender']} | {run['lifetime']:g} | {per_write} | {gets} | {writes} "
            f"| {_seconds(run['all_exist_after'])}{existed} | {_rate(run.get('first_sync_rate'))} "
            f"| {100 * run['expired_share']:.2f}% | {run['worst_lateness']:.1f} "
            f"| {run['rss_end_kib'] / 1024:.0f} / {run['rss_peak_kib'] / 1024:.0f} "
            f"| {run['calls_per_lifetime']:.1f} | {run['cpu_percent_steady']:.1f} | {averages or '-'} |"
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


def render_requests(runs: dict[str, dict[str, Any]]) -> str:
    """Per load, requests per Secret write by verb and resource, one column per contender."""
    by_load: dict[str, list[dict[str, Any]]] = {}
    for run in _ordered(runs):
        if run.get("requests") is not None:
            by_load.setdefault(run["load"], []).append(run)
    blocks = []
    for chosen in by_load.values():
        first = chosen[0]
        columns = {run["contender"]: per_write_rows(from_json(run["requests"])) for run in chosen}
        rows = sorted({row for per_row in columns.values() for row in per_row})
        label = Load(first["credentials"], first["logins"]).label + busy_label(first)
        title = f"{label}, {first['lifetime']:g} s tokens"
        lines = [
            f"| {title}: requests per Secret write | " + " | ".join(columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        for row in rows:
            cells = [f"{per_row[row]:.3f}" if row in per_row else "" for per_row in columns.values()]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        totals = [f"**{_per_write(run)[0]}**" for run in chosen]
        lines.append("| **all** | " + " | ".join(totals) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def render_floor(runs: dict[str, dict[str, Any]]) -> str:
    """Ours beside the idle kopf process watching the same objects, where it was measured."""
    lines = []
    for run in _ordered(runs):
        floor = run.get("idle_kopf_rss_kib")
        if floor:
            lines.append(
                f"{run['load_label']}, {run['lifetime']:g} s tokens: idle kopf {floor / 1024:.1f} MiB; "
                f"{run['contender']} {run['rss_end_kib'] / 1024:.1f} MiB at the end "
                f"({run['rss_end_kib'] / floor:.2f}x), peak {run['rss_peak_kib'] / 1024:.1f} MiB "
                f"({run['rss_peak_kib'] / floor:.2f}x); target <= {TARGET_RATIO}x"
            )
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------------


def parse_loads(text: str) -> list[Load]:
    """ "200@30,2000@60,100own": N sharing one account, or Nown each its own; @L a token lifetime."""
    loads = []
    for item in text.split(","):
        item = item.strip()
        count_text, _, lifetime_text = item.partition("@")
        own = count_text.endswith("own")
        try:
            count = int(count_text.removesuffix("own"))
            lifetime = float(lifetime_text) if lifetime_text else None
        except ValueError:
            raise argparse.ArgumentTypeError(f"load {item!r}: want N, Nown, N@L or Nown@L") from None
        if count < 1 or (lifetime is not None and lifetime <= 0):
            raise argparse.ArgumentTypeError(
                f"load {item!r}: need at least one credential and a lifetime > 0"
            )
        loads.append(Load(count, count if own else 1, lifetime))
    return loads


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser("benchmarks.compare", __doc__)
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated, from {', '.join(CONTENDERS)} (default: all; ESO if cached or --build-eso)",
    )
    parser.add_argument(
        "--loads",
        type=parse_loads,
        default=parse_loads(DEFAULT_LOADS),
        help=f"comma-separated N, Nown, N@L or Nown@L (see above); default {DEFAULT_LOADS}",
    )
    parser.add_argument(
        "--lifetime", type=float, default=60.0, help="token lifetime in s for loads without @L (60)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        help=f"the counting window in s, from {SETTLE_AFTER_LAST_SECRET:g}s after every Secret exists "
        f"(default {WINDOW_LIFETIMES} lifetimes)",
    )
    parser.add_argument(
        "--idle-kopf",
        action="store_true",
        help="before ours starts, measure an idle kopf process watching the same objects (footprint.py)",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for ours and the idle kopf floor (default: this one). The dev venv's test"
        " packages change what the operator imports (pyjwt loads cryptography, httpx its rich CLI):"
        " to measure what the image ships, use a venv of requirements.lock alone (docs/benchmarks.md)",
    )
    parser.add_argument("--settle", type=float, default=20.0, help="idle kopf: seconds before sampling (20)")
    parser.add_argument(
        "--busy", type=int, default=0, help="CPU-bound processes to run beside each contender (default 0)"
    )
    parser.add_argument(
        "--build-eso", action="store_true", help="build External Secrets Operator if not cached (minutes)"
    )
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    parser.add_argument("--work-dir", type=Path, help="keep clusters' data and logs here (default: temp)")
    options = parser.parse_args(argv)
    options.contenders = [name.strip() for name in options.contenders.split(",") if name.strip()]
    unknown = set(options.contenders) - set(CONTENDERS)
    if unknown or not options.contenders:
        parser.error(f"unknown contenders {sorted(unknown)}; choose from {', '.join(CONTENDERS)}")
    options.exist_timeout = lambda load: 120.0 + 0.3 * load.credentials
    return options


def make_contenders(names: Sequence[str], build_eso: bool, python: str = sys.executable) -> list[Contender]:
    """The contenders asked for; ESO's are left out, saying so, when its build is not cached."""
    eso_dir = None
    if any(name in ESO_CONTENDERS for name in names):
        if build_eso:
            print("building External Secrets Operator if not cached (minutes, once)", flush=True)
        eso_dir = cached_eso(build_eso)
        if eso_dir is None:
            left_out = ", ".join(name for name in names if name in ESO_CONTENDERS)
            print(
                f"External Secrets Operator is not built on this machine: {left_out} left out "
                "(--build-eso builds it from the Go module proxy, about 13 minutes, once)",
                flush=True,
            )
    contenders: list[Contender] = []
    for name in names:
        if name == "ours":
            contenders.append(Ours(python))
        elif name in ("cron", "loop"):
            contenders.append(CronLoop(name, CRON_INTERVAL_FRACTION))
        elif eso_dir is not None:
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
    measured: dict[str, dict[str, Any]] = {}
    invocation = {
        "command": command,
        "seconds": 0,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    document["commands"].append(invocation)

    def measure(work_dir: Path) -> int:
        contenders = make_contenders(options.contenders, options.build_eso, options.python)
        for load in options.loads:
            for contender in contenders:
                result = run_one(contender, load, options, work_dir)
                key = run_key(load.key + (f" busy{options.busy}" if options.busy else ""), contender.name)
                runs[key] = measured[key] = asdict(result)
                invocation["seconds"] = round(time.monotonic() - began)
                save_results(results_file, document)
        return 0

    code = run_guarded(measure, options.work_dir, "compare-")
    if code != 0:
        return code
    total = time.monotonic() - began
    revisions = ", ".join(sorted({run["operator_revision"] for run in measured.values()}))
    print()
    print(f"{invocation['started']}, operator at {revisions}, load average now {load_average()}")
    print()
    print(render_table(measured))
    print()
    print(render_requests(measured))
    floor = render_floor(measured)
    if floor:
        print()
        print(floor)
    print(f"\n{command}: {total:.0f}s wall clock; results in {results_file}")
    if not options.no_plots:
        from benchmarks.compare.plots import draw  # matplotlib only when plotting

        for path in draw({key: run for key, run in runs.items() if not run.get("busy")}, options.results):
            print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
