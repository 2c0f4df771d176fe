"""Memory and CPU of the operator at N SimacanCredentials, next to an idle kopf operator's floor.

The target from the issue: with 2,000 SimacanCredentials the operator's resident memory stays within
1.5x of an idle kopf operator watching the same objects. This is a benchmark for people to read, not a
timed test: it prints figures and a verdict; nothing in the test suite depends on it.

Everything runs on loopback, on a throwaway control plane (etcd, kube-apiserver, kube-controller-manager
from localenv/controlplane.py) and the fake Auth API (localenv/fakeauth.py, in this process):

1. Create namespace `bench`, K login Secrets and N SimacanCredentials that use them round-robin.
2. Floor: run idle_kopf_operator.py (kopf with one no-op event handler) until it has seen all N
   objects, let it settle, sample RSS (VmRSS), peak RSS (VmHWM) and CPU time, stop it. It runs first,
   so it sees credentials without status and no token Secrets: a conservative (low) floor.
3. The operator: start, wait until /metrics shows simacan_credential_ready=1 for all N, settle, sample.
   Then restart it (tokens are read back from the Secrets, so no Auth API call is expected unless a
   refresh falls due), wait until all are Ready again, settle, sample. With --cpu-window, keep it running
   that long and report CPU, refreshes and RSS every 10 s over the window (use a short --lifetime, e.g.
   60, so refreshes happen in it and memory growth under churn shows).

The operator also watches Secrets (N token Secrets and K login Secrets); the floor, as the issue defines
it, watches only the SimacanCredentials. While waiting for Ready, /metrics is scraped once a second, which
the operator pays for in CPU; nothing is polled during the settle windows.

The verdict compares the operator's largest settled RSS with the floor's settled RSS. Only the explicit
settle and CPU windows wait a fixed time; everything else polls with a deadline.

Usage (from the repository root)::

    /tmp/venv/bin/python -m benchmarks.footprint --credentials 2000
    /tmp/venv/bin/python -m benchmarks.footprint --credentials 2000 --distinct-logins 2000 --json out.json
    /tmp/venv/bin/python -m benchmarks.footprint --credentials 2000 --lifetime 60 --cpu-window 120

Exit status: 0 when the target is met, 1 when it is not, 2 when the benchmark itself failed, 130 on
Ctrl-C. Everything it starts is stopped on exit, on errors and on Ctrl-C or SIGTERM. CPU figures are
only as quiet as the machine: other busy processes slow the control plane and stretch the timings.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import re
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client

from benchmarks.child import REPO_ROOT, BenchmarkError, Child, Sample, settle, wait_for
from benchmarks.runner import benchmark_parser, operator_revision, run_guarded
from localenv.controlplane import ControlPlane, running_control_plane
from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import api_client
from localenv.processes import free_ports, kube_env, operator_argv
from simacan_token_operator.model.spec import GROUP, PLURAL, VERSION

BENCH_DIR = REPO_ROOT / "benchmarks"
NAMESPACE = "bench"
CRD_FILE = REPO_ROOT / "crds" / "simacancredentials.auth.simacan.com.yaml"
IDLE_OPERATOR = BENCH_DIR / "idle_kopf_operator.py"
SEEN_FILE_ENV = "IDLE_KOPF_SEEN_FILE"  # must match idle_kopf_operator.py
TARGET_RATIO = 1.5
CREATE_WORKERS = 16
WINDOW_SAMPLE_SECONDS = 10.0
READY_POLL_SECONDS = 1.0  # each /metrics scrape costs the operator some CPU: don't hammer it
PROBLEM_LINE = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL)\b")


def problem_lines(log: Path) -> dict[str, int]:
    """WARNING/ERROR line counts in the operator log (its format starts with date, time, level)."""
    counts: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = PROBLEM_LINE.match(line)
        if match:
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


# --- cluster population ----------------------------------------------------------------------------


def install_crd(api: client.ApiClient, timeout: float = 60.0) -> None:
    extensions = client.ApiextensionsV1Api(api)
    body = yaml.safe_load(CRD_FILE.read_text())
    extensions.create_custom_resource_definition(body)
    deadline = time.monotonic() + timeout
    while True:
        crd = extensions.read_custom_resource_definition(body["metadata"]["name"])
        conditions = (crd.status.conditions if crd.status else None) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        if time.monotonic() > deadline:
            raise BenchmarkError(f"CRD {body['metadata']['name']} not Established after {timeout:.0f}s")
        time.sleep(0.1)


def login_users(count: int) -> dict[str, str]:
    return {f"bench-{index}@example.com": secrets.token_urlsafe(18) for index in range(count)}


def populate(api: client.ApiClient, users: Mapping[str, str], credentials: int, auth_url: str) -> float:
    """Create the namespace, one login Secret per user and the credentials; returns the seconds taken."""
    began = time.monotonic()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    namespace: Any = {"metadata": {"name": NAMESPACE}}  # plain dicts: the client sends them as JSON
    core.create_namespace(namespace)
    logins = list(users.items())

    def create_login(index: int) -> None:
        username, password = logins[index]
        body: Any = {
            "metadata": {"name": f"login-{index}"},
            "type": "Opaque",
            "stringData": {"username": username, "password": password},
        }
        core.create_namespaced_secret(NAMESPACE, body, _preload_content=False)

    def create_credential(index: int) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SimacanCredential",
            "metadata": {"name": f"cred-{index:05d}"},
            "spec": {"credentialsSecretRef": {"name": f"login-{index % len(logins)}"}, "authURL": auth_url},
        }
        custom.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, body, _preload_content=False
        )

    with concurrent.futures.ThreadPoolExecutor(CREATE_WORKERS) as pool:
        # list() re-raises the first failure instead of dropping it.
        list(pool.map(create_login, range(len(logins))))
        list(pool.map(create_credential, range(credentials)))
    return time.monotonic() - began


def count_ready_in_status(api: client.ApiClient) -> int:
    """Cross-check of the metrics: credentials whose status says Ready=True, as kubectl would show."""
    listed: Any = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, _preload_content=False
    )
    items = json.loads(listed.data).get("items") or []
    return sum(
        1
        for item in items
        for condition in (item.get("status") or {}).get("conditions") or []
        if condition.get("type") == "Ready" and condition.get("status") == "True"
    )


# --- the floor: idle kopf --------------------------------------------------------------------------


@dataclass(frozen=True)
class FloorResult:
    seconds_to_all_seen: float
    cpu_seconds_to_all_seen: float
    settled: Sample
    idle_cpu_percent: float
    stop_seconds: float


def measure_floor(
    plane: ControlPlane, work_dir: Path, credentials: int, options: argparse.Namespace
) -> FloorResult:
    seen_file = work_dir / "idle-kopf-seen"
    argv = [options.python, "-m", "kopf", "run", "--standalone", "--namespace", NAMESPACE, str(IDLE_OPERATOR)]
    env = kube_env(plane.admin_kubeconfig, **{SEEN_FILE_ENV: str(seen_file)})
    with Child("idle kopf", argv, env, work_dir / "idle-kopf.log") as kopf_child:

        def seen() -> int | None:
            with contextlib.suppress(FileNotFoundError, ValueError):
                count = int(seen_file.read_text())
                return count if count >= credentials else None
            return None

        wait_for(seen, options.timeout, f"idle kopf to see {credentials} objects", kopf_child, 0.2)
        at_seen = kopf_child.sample()
        seconds = time.monotonic() - kopf_child.started_at
        settle(kopf_child, options.settle)
        settled = kopf_child.sample()
        _, stop_seconds = kopf_child.stop()
    return FloorResult(
        seconds_to_all_seen=seconds,
        cpu_seconds_to_all_seen=at_seen.cpu_seconds,
        settled=settled,
        idle_cpu_percent=_percent(settled.cpu_seconds - at_seen.cpu_seconds, options.settle),
        stop_seconds=stop_seconds,
    )


# --- the operator ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorRun:
    """One operator process, from start to all credentials Ready and a settle window."""

    seconds_to_all_ready: float
    cpu_seconds_to_all_ready: float
    password_calls: int  # Auth API logins during this run (start to end of settle)
    refresh_calls: int
    settled: Sample
    idle_cpu_percent: float
    ready_in_status: int


@dataclass(frozen=True)
class CpuWindow:
    seconds: float
    cpu_percent: float
    password_calls: int
    refresh_calls: int
    secrets_written: int
    after: Sample
    rss_trace_kib: list[int]  # every WINDOW_SAMPLE_SECONDS: levels off, or keeps growing?


@dataclass(frozen=True)
class OperatorLife:
    """One operator process: its run to all Ready, a steady window if asked for, then how it
    stopped on SIGTERM."""

    run: OperatorRun
    window: CpuWindow | None
    stop_seconds: float
    stop_exit_code: int


@dataclass(frozen=True)
class OperatorResult:
    first: OperatorLife
    restart: OperatorLife
    """The same operator started again: it finds every token in place. The steady window is its."""
    log_problems: dict[str, int]


class Operator:
    """The real operator process, started the way a user runs it, watching only `bench`."""

    def __init__(self, plane: ControlPlane, fake: FakeAuthAPI, log: Path, python: str) -> None:
        self.health_port, self.metrics_port = free_ports(2)
        argv = operator_argv(
            python=python,
            namespace=NAMESPACE,
            allowed_auth_host=f"127.0.0.1:{fake.port}",
            auth_ca_file=fake.ca_file,
            health_port=self.health_port,
            metrics_port=self.metrics_port,
        )
        self.child = Child("operator", argv, kube_env(plane.admin_kubeconfig), log)

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text

    def ready_count(self) -> int:
        try:
            text = self.metrics()
        except httpx.TransportError:
            return 0
        return sum(
            1
            for line in text.splitlines()
            if line.startswith("simacan_credential_ready{") and float(line.rpartition(" ")[2]) == 1.0
        )

    def secrets_written(self) -> int:
        for line in self.metrics().splitlines():
            if line.startswith("simacan_token_refresh_attempts_total{") and 'result="success"' in line:
                return int(float(line.rpartition(" ")[2]))
        return 0


def measure_run(
    plane: ControlPlane, fake: FakeAuthAPI, operator: Operator, credentials: int, options: argparse.Namespace
) -> OperatorRun:
    passwords, refreshes = fake.count("password"), fake.count("refresh")

    def all_ready() -> int | None:
        count = operator.ready_count()
        return count if count >= credentials else None

    wait_for(
        all_ready, options.timeout, f"{credentials} credentials Ready", operator.child, READY_POLL_SECONDS
    )
    at_ready = operator.child.sample()
    seconds = time.monotonic() - operator.child.started_at
    settle(operator.child, options.settle)
    settled = operator.child.sample()
    with contextlib.closing(api_client(plane.admin_kubeconfig, pool_size=CREATE_WORKERS)) as api:
        ready_in_status = count_ready_in_status(api)
    return OperatorRun(
        seconds_to_all_ready=seconds,
        cpu_seconds_to_all_ready=at_ready.cpu_seconds,
        password_calls=fake.count("password") - passwords,
        refresh_calls=fake.count("refresh") - refreshes,
        settled=settled,
        idle_cpu_percent=_percent(settled.cpu_seconds - at_ready.cpu_seconds, options.settle),
        ready_in_status=ready_in_status,
    )


def measure_window(fake: FakeAuthAPI, operator: Operator, seconds: float) -> CpuWindow:
    before = operator.child.sample()
    passwords, refreshes, written = fake.count("password"), fake.count("refresh"), operator.secrets_written()
    trace = settle(operator.child, seconds, every=WINDOW_SAMPLE_SECONDS)
    after = operator.child.sample()
    written_after = operator.secrets_written()  # one scrape, after the CPU sample
    return CpuWindow(
        seconds=seconds,
        cpu_percent=_percent(after.cpu_seconds - before.cpu_seconds, seconds),
        password_calls=fake.count("password") - passwords,
        refresh_calls=fake.count("refresh") - refreshes,
        secrets_written=written_after - written,
        after=after,
        rss_trace_kib=[s.rss_kib for s in (before, *trace, after)],
    )


def measure_operator(
    plane: ControlPlane, fake: FakeAuthAPI, work_dir: Path, credentials: int, options: argparse.Namespace
) -> OperatorResult:
    log = work_dir / "operator.log"
    first = operator_life(plane, fake, log, credentials, options, window_seconds=0.0)
    restart = operator_life(plane, fake, log, credentials, options, options.cpu_window)
    return OperatorResult(first=first, restart=restart, log_problems=problem_lines(log))


def operator_life(
    plane: ControlPlane,
    fake: FakeAuthAPI,
    log: Path,
    credentials: int,
    options: argparse.Namespace,
    window_seconds: float,
) -> OperatorLife:
    """Start the operator, measure it to all Ready (and a steady window of `window_seconds`, if
    any), and stop it with SIGTERM."""
    operator = Operator(plane, fake, log, options.python)
    with operator.child:
        run = measure_run(plane, fake, operator, credentials, options)
        window = measure_window(fake, operator, window_seconds) if window_seconds > 0 else None
        exit_code, stop_seconds = operator.child.stop()
    return OperatorLife(run, window, stop_seconds, exit_code)


# --- report ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """The load, as the command line asked for it."""

    credentials: int
    distinct_logins: int
    token_lifetime_seconds: float
    settle_seconds: float

    @classmethod
    def of(cls, options: argparse.Namespace) -> Setup:
        return cls(options.credentials, options.distinct_logins, options.lifetime, options.settle)


@dataclass(frozen=True)
class Result:
    operator_revision: str
    setup: Setup
    control_plane_seconds: float
    populate_seconds: float
    floor: FloorResult
    operator: OperatorResult
    control_plane_rss_kib: dict[str, int]

    @property
    def worst_operator_rss_kib(self) -> int:
        runs = [self.operator.first.run.settled, self.operator.restart.run.settled]
        if self.operator.restart.window is not None:
            runs.append(self.operator.restart.window.after)
        return max(s.rss_kib for s in runs)

    @property
    def ratio(self) -> float:
        return self.worst_operator_rss_kib / self.floor.settled.rss_kib

    @property
    def passed(self) -> bool:
        return self.ratio <= TARGET_RATIO


def _percent(cpu_seconds: float, wall_seconds: float) -> float:
    return 100.0 * cpu_seconds / wall_seconds if wall_seconds > 0 else 0.0


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def render(result: Result) -> str:
    floor, op = result.floor, result.operator
    first, restart = op.first.run, op.restart.run
    base = floor.settled.rss_kib
    rows: list[tuple[str, str, str, str]] = [
        ("", "idle kopf", "operator", "after restart"),
        ("RSS after settle (MiB)", _mib(base), _mib(first.settled.rss_kib), _mib(restart.settled.rss_kib)),
        (
            "  ratio to idle kopf",
            "1.00x",
            f"{first.settled.rss_kib / base:.2f}x",
            f"{restart.settled.rss_kib / base:.2f}x",
        ),
        (
            "peak RSS, VmHWM (MiB)",
            _mib(floor.settled.hwm_kib),
            _mib(first.settled.hwm_kib),
            _mib(restart.settled.hwm_kib),
        ),
        (
            "time to all seen/Ready (s)",
            f"{floor.seconds_to_all_seen:.1f}",
            f"{first.seconds_to_all_ready:.1f}",
            f"{restart.seconds_to_all_ready:.1f}",
        ),
        (
            "CPU to all seen/Ready (s)",
            f"{floor.cpu_seconds_to_all_seen:.1f}",
            f"{first.cpu_seconds_to_all_ready:.1f}",
            f"{restart.cpu_seconds_to_all_ready:.1f}",
        ),
        (
            f"CPU in {result.setup.settle_seconds:.0f}s settle (% core)",
            f"{floor.idle_cpu_percent:.1f}",
            f"{first.idle_cpu_percent:.1f}",
            f"{restart.idle_cpu_percent:.1f}",
        ),
        (
            "Auth API logins / refreshes",
            "-",
            f"{first.password_calls} / {first.refresh_calls}",
            f"{restart.password_calls} / {restart.refresh_calls}",
        ),
        ("Ready=True in status", "-", str(first.ready_in_status), str(restart.ready_in_status)),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    setup = result.setup
    lines = [
        f"Footprint: {setup.credentials} SimacanCredentials, {setup.distinct_logins} distinct login(s), "
        f"token lifetime {setup.token_lifetime_seconds:.0f}s; operator at {result.operator_revision}",
        f"control plane provisioned in {result.control_plane_seconds:.1f}s; "
        f"{setup.credentials} credentials and {setup.distinct_logins} login Secret(s) created in "
        f"{result.populate_seconds:.1f}s",
        "",
    ]
    for row in rows:
        lines.append(
            f"{row[0]:<{widths[0]}}  " + "  ".join(f"{cell:>{widths[i]}}" for i, cell in enumerate(row) if i)
        )
    lines.append("")
    lines.append(
        f"stop on SIGTERM: operator {op.first.stop_seconds:.1f}s (exit code {op.first.stop_exit_code}), "
        f"after restart {op.restart.stop_seconds:.1f}s (exit code {op.restart.stop_exit_code}), "
        f"idle kopf {floor.stop_seconds:.1f}s"
    )
    if op.restart.window is not None:
        w = op.restart.window
        lines.append(
            f"steady window {w.seconds:.0f}s: CPU {w.cpu_percent:.1f}% of a core, "
            f"{w.password_calls} logins / {w.refresh_calls} refreshes, {w.secrets_written} Secrets written, "
            f"RSS after {_mib(w.after.rss_kib)} MiB (peak {_mib(w.after.hwm_kib)} MiB)"
        )
        trace = " ".join(f"{kib / 1024:.0f}" for kib in w.rss_trace_kib)
        lines.append(f"  RSS every {WINDOW_SAMPLE_SECONDS:.0f}s in the window (MiB): {trace}")
    problems = ", ".join(f"{n} {level}" for level, n in sorted(op.log_problems.items())) or "none"
    lines.append(f"operator log WARNING/ERROR lines: {problems}")
    plane = ", ".join(f"{name} {_mib(kib)} MiB" for name, kib in result.control_plane_rss_kib.items())
    lines.append(f"control plane RSS at the end: {plane}")
    verdict = "PASS" if result.passed else "FAIL"
    lines.append(
        f"{verdict}: operator RSS {_mib(result.worst_operator_rss_kib)} MiB (largest settled sample) is "
        f"{result.ratio:.2f}x the idle kopf floor of {_mib(base)} MiB (target <= {TARGET_RATIO}x)"
    )
    return "\n".join(lines)


def to_json(result: Result) -> dict[str, Any]:
    data = asdict(result)
    data.update(
        worst_operator_rss_kib=result.worst_operator_rss_kib,
        ratio=result.ratio,
        target_ratio=TARGET_RATIO,
        passed=result.passed,
    )
    return data


# --- main ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser("benchmarks.footprint", __doc__)
    parser.add_argument(
        "--credentials", "-n", type=int, default=2000, help="SimacanCredentials (default 2000)"
    )
    parser.add_argument(
        "--distinct-logins",
        "-k",
        type=int,
        default=1,
        help="distinct username/password Secrets, shared round-robin (default 1: one login for all)",
    )
    parser.add_argument("--lifetime", type=float, default=3600.0, help="access token lifetime in s (3600)")
    parser.add_argument("--settle", type=float, default=20.0, help="idle seconds before each sample (20)")
    parser.add_argument(
        "--cpu-window",
        type=float,
        default=0.0,
        help="after the restart, also measure CPU over this many seconds (default 0: skip)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="deadline per wait in s (default 120 + 0.3 s per credential)",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for the idle kopf floor and the operator (default: this one). To measure what"
        " the image ships, use a venv holding only the runtime dependencies: python -m venv /tmp/rt &&"
        " /tmp/rt/bin/pip install -r requirements.lock && /tmp/rt/bin/pip install --no-deps .",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--work-dir", type=Path, help="keep control-plane data and logs here (default: a temp dir, removed)"
    )
    options = parser.parse_args(argv)
    if options.credentials < 1 or not 1 <= options.distinct_logins <= options.credentials:
        parser.error("need credentials >= 1 and 1 <= distinct-logins <= credentials")
    if options.timeout is None:
        options.timeout = 120.0 + 0.3 * options.credentials
    return options


def run(options: argparse.Namespace, work_dir: Path) -> Result:
    users = login_users(options.distinct_logins)
    revision = operator_revision()  # before the run: the tree may change while it measures
    with (
        running_control_plane(work_dir / "cluster") as plane,
        FakeAuthAPI(users, access_lifetime=options.lifetime, tls=True) as fake,
        contextlib.closing(api_client(plane.admin_kubeconfig, pool_size=CREATE_WORKERS)) as api,
    ):
        print(f"control plane up in {plane.provision_seconds:.1f}s at {plane.server}", flush=True)
        install_crd(api)
        populate_seconds = populate(api, users, options.credentials, fake.base_url)
        print(f"created {options.credentials} credentials in {populate_seconds:.1f}s", flush=True)
        floor = measure_floor(plane, work_dir, options.credentials, options)
        print(f"idle kopf floor: {_mib(floor.settled.rss_kib)} MiB", flush=True)
        operator = measure_operator(plane, fake, work_dir, options.credentials, options)
        return Result(
            operator_revision=revision,
            setup=Setup.of(options),
            control_plane_seconds=plane.provision_seconds,
            populate_seconds=populate_seconds,
            floor=floor,
            operator=operator,
            control_plane_rss_kib=plane.resident_memory_kib(),
        )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    began = time.monotonic()

    def measure(work_dir: Path) -> int:
        result = run(options, work_dir)
        print()
        print(render(result))
        print(f"wall clock: {time.monotonic() - began:.0f}s")
        if options.json is not None:
            options.json.write_text(json.dumps(to_json(result), indent=2) + "\n")
        return 0 if result.passed else 1

    return run_guarded(measure, options.work_dir, "footprint-")


if __name__ == "__main__":
    raise SystemExit(main())
