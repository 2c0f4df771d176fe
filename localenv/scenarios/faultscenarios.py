"""The faults of the fault report, each one run on a real control plane and measured from outside.

Each scenario returns Figures and the list of broken promises it saw (`violations`); the e2e
tests assert there are none and that the timings stay within generous deadlines, and
`benchmarks/faults.py` prints the same figures as a table (median of several runs).
"""

from __future__ import annotations

import datetime
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

from localenv.controlplane import ControlPlane
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually
from localenv.scenarios.crashhook import Point, crash_hook
from localenv.scenarios.faultkit import (
    OPERATOR_NAMESPACE,
    Figures,
    LeaderSampler,
    Mark,
    Scene,
    SecretRecorder,
    kubeconfig_via,
    scene,
    token_expiry,
)
from localenv.tcpproxy import TcpProxy

REFRESH_REQUESTED = "auth.simacan.com/refresh-requested-at"


@dataclass
class Outcome:
    figures: Figures
    violations: list[str] = field(default_factory=list)
    notes: str = ""
    """What else a reader of a failure needs (e.g. the writes the crash webhook saw)."""


def _request_refresh(current: Scene, name: str) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    current.ns.patch_credential(name, {"metadata": {"annotations": {REFRESH_REQUESTED: stamp}}})
    return stamp


def _request_handled(current: Scene, name: str, stamp: str) -> bool:
    return (current.ns.credential(name).get("status") or {}).get("lastRefreshRequest") == stamp


class _Mark(NamedTuple):
    """When a fault began, and the Auth API calls and Events counted just before: where figures start."""

    at: float
    calls: int
    events: int


def _mark(current: Scene) -> _Mark:
    calls, events = current.fake_auth.count(), current.event_count()
    return _Mark(time.time(), calls, events)


def _figures(
    fault: str,
    current: Scene,
    recorder: SecretRecorder,
    names: Sequence[str],
    since: _Mark,
    recover: float,
    until: tuple[float, int] | None = None,
    window: tuple[Mark, Mark] | None = None,
    **extra: float,
) -> Figures:
    """Counts from `since` to now, or to `until` = (time, Auth API call count then); Secret
    writes between the two marks of `window` instead, when given (exact, see Mark)."""
    end, calls_end = until if until is not None else (time.time(), current.fake_auth.count())
    return Figures(
        fault=fault,
        secret_writes=len(recorder.writes(names, *(window or (since.at, end)))),
        auth_calls=calls_end - since.calls,
        events=current.event_count() - since.events,
        longest_invalid=recorder.longest_invalid(names, since.at, end),
        recover=recover,
        extra=extra,
    )


# --- a leader cut off by a black hole ---------------------------------------------------------------


def _one_leader_at_a_time(sampler: LeaderSampler, violations: list[str]) -> float:
    """Seconds two replicas led at once, a violation when there were any."""
    overlap = sampler.overlap_seconds()
    if overlap > 0:
        violations.append(f"two leaders for {overlap:.2f}s")
    return overlap


def _leader_and_standby(
    current: Scene, elect: Sequence[str], name: str, leader_kubeconfig: Path | None = None
) -> tuple[OperatorProcess, OperatorProcess]:
    """Two replicas, the first one leading, and credential `name` with its first token."""
    leader = current.start_operator(*elect, kubeconfig=leader_kubeconfig)
    eventually(lambda: leader.metric("simacan_leader") == 1.0, timeout=30, what="the first replica leads")
    standby = current.start_operator(*elect)
    current.create_credentials([name])
    eventually(lambda: current.all_ready([name]), timeout=30, what="first token")
    return leader, standby


def blackhole_leader(plane: ControlPlane, operator_kubeconfig: Path, work_dir: Path) -> Outcome:
    """Leader A reaches the API server through a proxy, standby B directly. The proxy black-holes
    A; B must take over only after A stopped writing; after the heal A (restarted by its
    supervisor, as kubelet would) stays a standby and writes nothing."""
    name = "fleet-api"
    lease = f"fault-{uuid.uuid4().hex[:8]}"
    elect = ("--leader-election-namespace", OPERATOR_NAMESPACE, "--leader-election-id", lease)
    apiserver_port = int(urlparse(plane.server).port or 443)
    violations: list[str] = []
    with (
        scene(plane, operator_kubeconfig, work_dir, lifetime=60) as current,
        TcpProxy("127.0.0.1", apiserver_port) as proxy,
    ):
        via_proxy = kubeconfig_via(operator_kubeconfig, proxy.port, work_dir / "via-proxy.kubeconfig")
        a, b = _leader_and_standby(current, elect, name, leader_kubeconfig=via_proxy)
        with (
            SecretRecorder(current.quiet_api(), current.ns.name) as recorder,
            LeaderSampler({"a": lambda: a, "b": lambda: b}) as sampler,
        ):
            eventually(lambda: len(sampler.samples) > 5, timeout=10, what="leadership samples")
            mark = _mark(current)
            blackholed = mark.at
            proxy.blackhole()
            eventually(lambda: sampler.first("b", True, blackholed), timeout=60, what="B takes over")
            b_leads = sampler.first("b", True, blackholed) or 0.0
            a_stopped = sampler.first("a", False, blackholed) or 0.0
            _request_refresh(current, name)  # make the new leader write now
            eventually(lambda: recorder.writes([name], b_leads), timeout=30, what="B's first write")
            first_b_write = recorder.writes([name], b_leads)[0].at
            assert a.process is not None
            a_exit = a.process.wait(timeout=60)  # A gave up leadership and exits for a clean restart
            a.stop()
            proxy.heal()
            a.start()  # through the healed proxy, as kubelet restarts the container
            restarted = time.time()
            eventually(lambda: a.metric("simacan_leader") == 0.0, timeout=30, what="A back as standby")
            # B writes again while A watches as a standby. Not by a second refresh request (one is
            # honoured per credential per minute) and not by deleting the Secret (which would
            # leave it without a token for a moment): our label edited is restored at once.
            label = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "someone-else"}}}
            current.ns.core.patch_namespaced_secret(name, current.ns.name, label)
            eventually(
                lambda: len(recorder.writes([name], restarted)) >= 2, timeout=30, what="B writes again"
            )
        if a_exit != 1:
            violations.append(f"A exited with {a_exit}, not 1, after losing the Lease")
        overlap = _one_leader_at_a_time(sampler, violations)
        if sampler.first("a", True, first_b_write) is not None:
            violations.append("A led again after B's first write")
        if "stopped writing" not in a.logs():
            violations.append("A's log does not say it stopped writing")
        if b.process is None or b.process.poll() is not None:
            violations.append("B is no longer running")
        figures = _figures(
            "leader black-holed (no FIN/RST)",
            current,
            recorder,
            [name],
            mark,
            recover=b_leads - blackholed,
            overlap=overlap,
            gap=b_leads - a_stopped,
            fenced_after=a_stopped - blackholed,
        )
    return Outcome(figures, violations)


def rolling_upgrade(plane: ControlPlane, operator_kubeconfig: Path, work_dir: Path) -> Outcome:
    """A rollout: the new replica starts as a standby, the old one gets SIGTERM while it keeps
    refreshing 6-second tokens; it must finish its writes and release the Lease before the new
    one leads, so the two never write at the same time."""
    name = "fleet-api"
    lease = f"rollout-{uuid.uuid4().hex[:8]}"
    elect = ("--leader-election-namespace", OPERATOR_NAMESPACE, "--leader-election-id", lease)
    violations: list[str] = []
    with scene(plane, operator_kubeconfig, work_dir, lifetime=6) as current:
        old, new = _leader_and_standby(current, elect, name)
        with (
            SecretRecorder(current.quiet_api(), current.ns.name) as recorder,
            LeaderSampler({"old": lambda: old, "new": lambda: new}) as sampler,
        ):
            eventually(
                lambda: len(recorder.writes([name], time.time() - 10)) >= 2, timeout=30, what="refreshes"
            )
            mark = _mark(current)
            stopping = mark.at
            exit_code = old.stop()
            eventually(lambda: sampler.first("new", True, stopping), timeout=30, what="new version leads")
            new_leads = sampler.first("new", True, stopping) or 0.0
            eventually(lambda: recorder.writes([name], new_leads), timeout=30, what="the new version writes")
        if exit_code != 0:
            violations.append(f"the old version exited with {exit_code} on SIGTERM")
        overlap = _one_leader_at_a_time(sampler, violations)
        figures = _figures(
            "rolling upgrade (SIGTERM the leader)",
            current,
            recorder,
            [name],
            mark,
            new_leads - stopping,
            overlap=overlap,
        )
    return Outcome(figures, violations)


# --- API server and etcd outages ------------------------------------------------------------------


def api_outage(
    plane: ControlPlane,
    operator_kubeconfig: Path,
    work_dir: Path,
    component: str,
    credentials: int = 5,
    lifetime: float = 90.0,
    refresh_before: int = 70,
) -> Outcome:
    """`component` (kube-apiserver: SIGKILL; etcd: SIGTERM) goes down and stays down until every
    token is due for refresh, then comes back with the same data. The operator must recover
    without restarting: every due token refreshed, and a credential created after the return served.

    Tokens fall due 20 s after issue but live 90 s, so that a slow restart of the API server
    (it takes 5-20 s on a busy machine) still leaves them valid: any time without a valid token
    is then the operator's, not the scenario's."""
    assert plane.processes is not None
    names = [f"cred-{i}" for i in range(credentials)]
    violations: list[str] = []
    with scene(plane, operator_kubeconfig, work_dir, lifetime=lifetime) as current:
        operator = current.start_operator()
        pid = operator.pid
        current.create_credentials(names, refreshBefore=f"{refresh_before}s")
        eventually(lambda: current.all_ready(names), timeout=60, what="all Ready")
        due = max(_next_refresh(current, n) for n in names)
        with SecretRecorder(current.quiet_api(), current.ns.name) as recorder:
            mark = _mark(current)
            start = recorder.mark()
            down = start.at
            if component == "kube-apiserver":
                plane.processes.kill("kube-apiserver", signal.SIGKILL)
            else:
                plane.processes.kill("etcd", signal.SIGTERM)
            time.sleep(max(due + 1.0 - time.time(), 0.0))  # the outage lasts until every token is due
            # Start it in the background and probe every 50 ms: the return is the first answered
            # request, however soon that comes after the process starts.
            starting = threading.Thread(target=plane.processes.start, args=(component,), daemon=True)
            starting.start()
            eventually(lambda: _api_ready(current), timeout=90, interval=0.05, what="API server ready again")
            back = time.time()
            starting.join(90)
            # iat is in whole seconds: a token issued in the second the outage began is not new.
            eventually(lambda: current.all_ready(names, after=down + 1), timeout=90, what="all refreshed")
            end = recorder.mark()  # the figures end here: later writes are routine refreshes
            recovered = (end.at, current.fake_auth.count())
            all_ready = recovered[0] - back
            created = time.time()
            current.create_credentials(["after-outage"])
            eventually(lambda: current.ns.secret("after-outage"), timeout=90, what="new credential's Secret")
            new_secret = time.time() - created
            eventually(lambda: current.all_ready(["after-outage"]), timeout=30, what="new credential Ready")
        if operator.process is None or operator.process.poll() is not None or operator.pid != pid:
            violations.append("the operator process exited")
        figures = _figures(
            f"{component} {'killed' if component == 'kube-apiserver' else 'stopped'} "
            f"until {credentials} tokens are due",
            current,
            recorder,
            names,
            mark,
            recover=all_ready,
            until=recovered,
            window=(start, end),
            new_credential=new_secret,
            outage=back - down,
        )
    return Outcome(figures, violations)


def _next_refresh(current: Scene, name: str) -> float:
    stated = (current.ns.credential(name).get("status") or {}).get("nextRefreshAt")
    assert stated, f"{name} has no status.nextRefreshAt"
    return datetime.datetime.fromisoformat(str(stated).replace("Z", "+00:00")).timestamp()


def _api_ready(current: Scene) -> bool:
    """A quorum read of an object answered: kube-apiserver and etcd both serve again."""
    try:
        current.ns.core.read_namespace(current.ns.name, _request_timeout=1)
    except Exception:  # still starting
        return False
    return True


# --- crashes at each step of a refresh ------------------------------------------------------------


def crash_during_refresh(
    plane: ControlPlane, operator_kubeconfig: Path, work_dir: Path, point: Point, lifetime: float = 30.0
) -> Outcome:
    """SIGKILL the operator at `point` of a refresh (crashhook.py), start it again, and check the
    Secret holds a valid token, the status agrees with it, and at most one extra login happened."""
    name = "fleet-api"
    violations: list[str] = []
    with scene(plane, operator_kubeconfig, work_dir, lifetime=lifetime) as current:
        operator = current.start_operator()
        current.create_credentials([name])
        eventually(lambda: current.all_ready([name]), timeout=30, what="first token")
        with (
            SecretRecorder(current.quiet_api(), current.ns.name) as recorder,
            crash_hook(current.api, current.ns.name, work_dir) as hook,
        ):
            before = current.ns.secret(name)
            mark = _mark(current)
            hook.arm(point, operator.pid)
            stamp = _request_refresh(current, name)
            eventually(lambda: hook.fired, timeout=30, what=f"the crash at {point}")
            killed = time.time()
            calls_at_crash = current.fake_auth.count() - mark.calls
            secret_at_crash = current.ns.secret(name)
            changed = (secret_at_crash or {}).get("metadata", {}).get("resourceVersion") != (
                before or {}
            ).get("metadata", {}).get("resourceVersion")
            if point == "secret-write" and changed:
                violations.append("the Secret changed although its write was refused")
            if point == "status-patch" and not changed:
                violations.append("the Secret did not change before the status patch")
            assert operator.process is not None
            operator.process.wait(timeout=10)
            operator.process = None
            operator.start()
            # Settled: the request was acted on, the token is valid, the status names it.
            eventually(
                lambda: _request_handled(current, name, stamp) and current.all_ready([name]),
                timeout=60,
                what="refresh request handled after the restart",
            )
            eventually(
                lambda: _status_agrees(current, name), timeout=30, what="status agrees with the Secret"
            )
            recovered = time.time() - killed
            extra_logins = current.fake_auth.count() - mark.calls - calls_at_crash
            if extra_logins > 1:
                violations.append(f"{extra_logins} Auth API calls after the restart (at most 1 allowed)")
            if point == "status-patch" and calls_at_crash != 1:
                violations.append(
                    f"{calls_at_crash} Auth API calls before the crash, expected the refresh's 1"
                )
            reviews = ", ".join(f"{step} {operation}" for _, step, operation, _ in hook.log)
            figures = _figures(
                f"SIGKILL before the {'Secret write' if point == 'secret-write' else 'status patch'}",
                current,
                recorder,
                [name],
                mark,
                recover=recovered,
                extra_logins=float(extra_logins),
            )
    return Outcome(figures, violations, reviews)


def _status_agrees(current: Scene, name: str) -> bool:
    """status.expiresAt names the expiry of the token the Secret holds."""
    status = current.ns.credential(name).get("status") or {}
    expires = token_expiry(current.ns.secret(name))
    stated = status.get("expiresAt")
    if expires is None or not stated:
        return False
    parsed = datetime.datetime.fromisoformat(str(stated).replace("Z", "+00:00")).timestamp()
    return abs(parsed - expires) < 2.0  # exp is whole seconds; a stale status is a refresh off
