"""The arena for the tenant-bounds proof (issue 19): one operator, a neighbour on 10 s tokens, and
how each attack is measured. The attacks themselves are in tenant_attacks.py.

Every figure comes from outside the operator: its memory from /proc/PID/status (VmHWM, reset
through clear_refs just before each attack), the neighbour's token from a watch on the API server
(faultkit.SecretRecorder), reasons from the credentials' status.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import GROUP, PLURAL, VERSION, Namespace, api_client
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually
from localenv.processes import free_ports
from localenv.scenarios.faultkit import PASSWORD, USERNAME, SecretRecorder, credential_spec, token_expiry

KIB = 1024
MIB = 1024 * KIB

# --- the promise ----------------------------------------------------------------------------------
MEMORY_BUDGET_MIB = 64.0
"""VmHWM during an attack minus VmRSS just before it."""
KILL_ABOVE_MIB = 2048.0
"""The guard SIGKILLs the operator past this RSS, so that a run that breaks the promise ends as a
failure instead of taking the machine's memory."""
NEIGHBOUR_LIFETIME = 10.0
"""The neighbour's tokens live 10 s: any stall of the operator shows as an expired token."""
TENANT_LIFETIME = 3600.0
ATTACK_DEADLINE = 30.0
"""How long the operator may take to act on an attack (its reason in status)."""
SETTLE_SECONDS = 2.0
"""After the operator acted on an attack: watch this long more for a late peak or an exit."""
SETTLE_DEADLINE = 20.0
"""Before an attack: wait at most this long for the operator's RSS to stop changing."""
AUTH_URL_MAX = 2048
"""The CRD's bound on spec.authURL: the tenants' Auth API URL is exactly this long."""
PARALLEL_CREATES = 8
LOGIN = "login"
NEIGHBOUR = "neighbour"
POLL_SECONDS = 0.2


# --- the operator's memory ------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    rss_kib: int
    hwm_kib: int


def proc_memory(pid: int) -> Memory:
    """VmRSS and VmHWM; KeyError for a process that has exited (a zombie has neither)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return Memory(int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0]))


def reset_peak(pid: int) -> None:
    """Set VmHWM to the current RSS (proc(5), clear_refs "5")."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def settled_memory(pid: int, within_kib: int = 2 * KIB, deadline: float = SETTLE_DEADLINE) -> Memory:
    """The RSS once two readings a second apart differ by less than `within_kib`: an earlier
    attack's work still under way (a retry, a thread finishing a request) must not count as the
    next attack's baseline. After `deadline`, the last reading."""
    end = time.monotonic() + deadline
    last = proc_memory(pid)
    while time.monotonic() < end:
        time.sleep(1.0)
        now = proc_memory(pid)
        if abs(now.rss_kib - last.rss_kib) < within_kib:
            return now
        last = now
    return last


class MemoryGuard:
    """Samples the operator's memory every few milliseconds, keeps the peak (which dies with the
    process), and SIGKILLs the operator if its RSS passes `limit_mib`."""

    def __init__(self, limit_mib: float, interval: float = 0.02) -> None:
        self.limit_kib = int(limit_mib * KIB)
        self.interval = interval
        self.peak_kib = 0
        self.killed_at_kib: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="memory-guard")

    def __enter__(self) -> MemoryGuard:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def watch(self, process: subprocess.Popen[bytes]) -> None:
        """Guard this process from now on; the peak starts again."""
        with self._lock:
            self._process, self.peak_kib, self.killed_at_kib = process, 0, None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                process = self._process
                if process is None or process.poll() is not None:
                    continue
                try:
                    memory = proc_memory(process.pid)
                except (OSError, KeyError, ValueError):
                    continue
                self.peak_kib = max(self.peak_kib, memory.hwm_kib)
                if memory.rss_kib > self.limit_kib:
                    process.send_signal(signal.SIGKILL)
                    self.killed_at_kib = memory.rss_kib


# --- figures --------------------------------------------------------------------------------------


@dataclass
class Figures:
    """One attack as the report prints it; `violations` empty means the promise held."""

    attack: str
    rss_before_mib: float = 0.0
    peak_mib: float = 0.0
    restarts: int = 0
    neighbour_invalid_seconds: float = 0.0
    reason: str = "-"
    acted_on_seconds: float | None = None
    operator_ended: str | None = None
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def delta_mib(self) -> float:
        return self.peak_mib - self.rss_before_mib

    def summary(self) -> str:
        acted = f"{self.acted_on_seconds:.1f} s" if self.acted_on_seconds is not None else "never"
        return (
            f"{self.attack}: RSS before {self.rss_before_mib:.0f} MiB, VmHWM {self.peak_mib:.0f} MiB "
            f"(+{self.delta_mib:.0f} MiB), restarts {self.restarts}, neighbour without a valid token "
            f"{self.neighbour_invalid_seconds:.1f} s, reason {self.reason}, acted on after {acted}"
            + "".join(f"; {note}" for note in self.notes)
        )


@dataclass
class Attack:
    """The window of one attack: what the attack code reports into, and the deadline it keeps."""

    figures: Figures
    operator: OperatorProcess
    started: float = field(default_factory=time.monotonic)

    def wait_until(
        self, probe: Callable[[], object], what: str, deadline: float = ATTACK_DEADLINE, acted_on: bool = True
    ) -> bool:
        """Poll `probe` until it is truthy; a violation (and False) if the operator ends first or
        the deadline passes. With `acted_on`, success sets `acted_on_seconds`."""
        end = time.monotonic() + deadline
        while True:
            if probe():
                if acted_on:
                    self.figures.acted_on_seconds = time.monotonic() - self.started
                return True
            if not alive(self.operator):
                self.figures.violations.append(f"{what}: the operator ended first")
                return False
            if time.monotonic() > end:
                self.figures.violations.append(f"{what}: not within {deadline:.0f} s")
                return False
            time.sleep(POLL_SECONDS)

    def expect(self, holds: bool, violation: str) -> None:
        if not holds:
            self.figures.violations.append(violation)


def alive(operator: OperatorProcess) -> bool:
    return operator.process is not None and operator.process.poll() is None


# --- the arena: one operator, a neighbour on 10 s tokens, tenants ----------------------------------


class Arena:
    """One operator watching all namespaces; a neighbour whose 10 s tokens must be refreshed before
    every expiry the whole time; a tenant Auth API; one namespace per attack, deleted after it."""

    def __init__(
        self,
        admin_kubeconfig: Path,
        operator_kubeconfig: Path,
        work_dir: Path,
        kill_above_mib: float = KILL_ABOVE_MIB,
    ) -> None:
        self.admin_kubeconfig = admin_kubeconfig
        self.operator_kubeconfig = operator_kubeconfig
        self.work_dir = work_dir
        self.kill_above_mib = kill_above_mib
        self._stack = contextlib.ExitStack()
        self._namespaces: list[Namespace] = []
        self.started_at = 0.0

    def __enter__(self) -> Arena:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        stack = self._stack
        try:
            self.neighbour_auth = stack.enter_context(
                FakeAuthAPI({USERNAME: PASSWORD}, access_lifetime=NEIGHBOUR_LIFETIME, tls=True)
            )
            (port,) = free_ports(1)  # the tenant's authURL is as long as the CRD allows
            padding = AUTH_URL_MAX - len(f"https://127.0.0.1:{port}/")
            self.tenant_auth = stack.enter_context(
                FakeAuthAPI(
                    {USERNAME: PASSWORD},
                    access_lifetime=TENANT_LIFETIME,
                    tls=True,
                    port=port,
                    path_prefix="/" + "p" * padding,
                )
            )
            assert len(self.tenant_auth.base_url) == AUTH_URL_MAX
            self.api = api_client(self.admin_kubeconfig, pool_size=2 * PARALLEL_CREATES)
            stack.callback(self._delete_namespaces)
            self.neighbour = self.namespace(NEIGHBOUR)
            self.neighbour.create_login_secret(LOGIN, USERNAME, PASSWORD)
            self.recorder = SecretRecorder(self.api, self.neighbour.name).start()
            stack.callback(self._stop_recorder)
            self.guard = stack.enter_context(MemoryGuard(self.kill_above_mib))
            args = []
            for fake_auth in (self.neighbour_auth, self.tenant_auth):
                args += [
                    "--allowed-auth-host",
                    f"127.0.0.1:{fake_auth.port}",
                    "--auth-ca-file",
                    str(fake_auth.ca_file),
                ]
            self.operator = OperatorProcess(
                self.operator_kubeconfig, "", self.work_dir / "operator.log", args
            )
            stack.callback(self._stop_operator)
            self.operator.start()
            self.neighbour.create_credential(NEIGHBOUR, credential_spec(self.neighbour_auth))
            self.neighbour.ready_token(NEIGHBOUR)
            self.started_at = time.time()
        except BaseException:
            stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # -- namespaces --------------------------------------------------------------------------------

    def namespace(self, prefix: str) -> Namespace:
        created = Namespace.create(self.api, prefix=prefix)
        self._namespaces.append(created)
        return created

    def clear(self, ns: Namespace) -> None:
        """Delete an attack's credentials at once (a restarted operator must not meet them again),
        then its namespace (the rest goes in the background)."""
        ns.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, ns.name, PLURAL)
        with contextlib.suppress(client.ApiException):
            ns.core.delete_namespace(ns.name)
        self._namespaces.remove(ns)

    def _delete_namespaces(self) -> None:
        for ns in list(self._namespaces):
            with contextlib.suppress(client.ApiException):
                self.clear(ns)

    def _stop_recorder(self) -> None:
        """The recorder's watch notices its stop flag at the next event: make events until it does."""
        stopping = threading.Thread(target=self.recorder.stop, name="stop-secret-recorder")
        stopping.start()
        for poke in range(100):
            with contextlib.suppress(client.ApiException):
                annotations = {"tenant-bounds.test/poke": str(poke)}
                body: Any = {"metadata": {"annotations": annotations}}
                self.neighbour.core.patch_namespaced_secret(LOGIN, self.neighbour.name, body)
            stopping.join(0.2)
            if not stopping.is_alive():
                return

    # -- the operator ------------------------------------------------------------------------------

    def _stop_operator(self) -> None:
        if self.operator.process is not None:
            if self.operator.process.poll() is None:
                self.operator.stop()
            else:
                self.operator.process = None

    def ensure_operator(self) -> None:
        """Start another operator if an attack ended the last one, then wait until the neighbour
        holds a valid token again, so that each attack's figures are its own."""
        if self.operator.process is not None and self.operator.process.poll() is not None:
            self.operator.process = None
        if self.operator.process is None:
            self.operator.start()
        eventually(
            lambda: (token_expiry(self.neighbour.secret(NEIGHBOUR)) or 0) > time.time() + 1,
            timeout=3 * NEIGHBOUR_LIFETIME,
            what="the neighbour holding a valid token",
        )

    def neighbour_invalid_seconds(self, since: float, until: float | None = None) -> float:
        """The longest stretch in [since, until] when the neighbour's Secret held no unexpired token."""
        return self.recorder.longest_invalid([NEIGHBOUR], since, until if until is not None else time.time())

    def neighbour_refreshes(self, since: float) -> int:
        return len(self.recorder.writes([NEIGHBOUR], since))

    @contextlib.contextmanager
    def measuring(self, name: str) -> Iterator[Attack]:
        """Wait for the RSS to settle and read it, reset the peak, run the attack, watch a little
        longer, then read the peak (from the guard if the operator has ended) and judge: memory,
        exits, the neighbour."""
        self.ensure_operator()
        operator = self.operator
        assert operator.process is not None
        process, runs = operator.process, operator.runs
        before = settled_memory(process.pid)
        reset_peak(process.pid)
        self.guard.watch(process)
        figures = Figures(name, rss_before_mib=before.rss_kib / KIB)
        attack = Attack(figures, operator)
        since = time.time()
        yield attack
        settle_end = time.monotonic() + SETTLE_SECONDS
        while alive(operator) and time.monotonic() < settle_end:
            time.sleep(POLL_SECONDS)
        if alive(operator):
            with contextlib.suppress(OSError, KeyError):
                self.guard.peak_kib = max(self.guard.peak_kib, proc_memory(process.pid).hwm_kib)
        figures.peak_mib = self.guard.peak_kib / KIB
        if process.poll() is not None:
            killed = self.guard.killed_at_kib
            figures.operator_ended = (
                f"killed by the test's guard at {killed / KIB:.0f} MiB RSS"
                if killed is not None
                else f"exited with {process.returncode}"
            )
            figures.restarts = 1
        figures.restarts += operator.runs - runs
        figures.neighbour_invalid_seconds = self.neighbour_invalid_seconds(since)
        attack.expect(
            figures.delta_mib < MEMORY_BUDGET_MIB,
            f"peak RSS grew by {figures.delta_mib:.0f} MiB (budget {MEMORY_BUDGET_MIB:.0f} MiB)",
        )
        attack.expect(figures.operator_ended is None, f"the operator ended: {figures.operator_ended}")
        attack.expect(
            figures.neighbour_invalid_seconds == 0,
            f"the neighbour held no valid token for {figures.neighbour_invalid_seconds:.1f} s",
        )

    def logs(self, chars: int = 6000) -> str:
        """The operator's own lines (not kopf's per-event debug lines), last `chars` of them."""
        lines = [
            line
            for line in self.operator.logs().splitlines()
            if " DEBUG " not in line and "kopf.objects" not in line
        ]
        return "\n".join(lines)[-chars:]


def table(results: Sequence[Figures]) -> str:
    """The benchmark report: one row per attack."""
    lines = [
        "| attack | RSS before | VmHWM during | delta | restarts | neighbour without valid token "
        "| offending credential's reason | acted on after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in results:
        acted = f"{f.acted_on_seconds:.1f} s" if f.acted_on_seconds is not None else "never"
        lines.append(
            f"| {f.attack} | {f.rss_before_mib:.0f} MiB | {f.peak_mib:.0f} MiB | {f.delta_mib:+.0f} MiB "
            f"| {f.restarts} | {f.neighbour_invalid_seconds:.1f} s | {f.reason} | {acted} |"
        )
    return "\n".join(lines)
