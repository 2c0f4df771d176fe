"""A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) as local processes.

The end-to-end tier needs real admission, RBAC, garbage collection and ServiceAccount tokens, which
mocks cannot give; like controller-runtime's envtest this runs the real binaries on loopback ports,
without Docker and without kubelets. Every start is a fresh cluster: the etcd data directory is wiped.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from kubernetes import client, config

from localenv.pki import (
    KeyPairFiles,
    ServingCertificate,
    write_private_file,
    write_rsa_key_pair,
    write_serving_certificate,
)
from localenv.podnetwork import POD_GATEWAY
from localenv.processes import exit_on_sigterm, free_ports, serve_until_stopped, spawn

BUILD_SCRIPT = Path(__file__).with_name("build-control-plane.sh")
INSTALL_DEPS_SCRIPT = Path(__file__).with_name("install-deps.sh")
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
)
POD_CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "endpointslice-controller",
    "node-lifecycle-controller",
    "root-ca-certificate-publisher-controller",
)
"""What running a Deployment on the pod network adds: rollouts, Service endpoints, node taints, the CA."""
NODE_NAME = "e2e-node"
"""The one kubelet a control plane admits (localenv/node.py), as system:node:<NODE_NAME>."""
STARTUP_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 10.0
LOG_TAIL_LINES = 40


class ControlPlaneError(RuntimeError):
    """The control plane could not be started or used."""


@dataclass(frozen=True)
class ControlPlane:
    """How to reach a running control plane; valid only inside `running_control_plane`."""

    server: str
    ca_file: Path
    admin_kubeconfig: Path
    node_kubeconfig: Path
    admin_token: str = field(repr=False)
    work_dir: Path
    provision_seconds: float
    pids: dict[str, int]
    processes: _Processes | None = field(default=None, repr=False, compare=False)
    """Fault injection for the fault tests: kill, stop and start etcd or kube-apiserver again."""

    def kubeconfig_for_service_account(
        self, namespace: str, name: str, expiration_seconds: int = 3600
    ) -> Path:
        """Write a kubeconfig that acts as the ServiceAccount, so RBAC is exercised exactly as granted.

        The ServiceAccount must already exist; the token comes from the TokenRequest API.
        """
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
        )
        with self.admin_api_client() as api:
            response = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request)
        if response.status is None or not response.status.token:
            raise ControlPlaneError(f"TokenRequest for {namespace}/{name} returned no token")
        path = self.work_dir / "kubeconfigs" / f"sa-{namespace}-{name}.kubeconfig"
        user = f"system:serviceaccount:{namespace}:{name}"
        write_kubeconfig(path, self.server, self.ca_file, user, response.status.token)
        return path

    def admin_api_client(self) -> client.ApiClient:
        """An ApiClient acting as cluster admin (group system:masters); close it when done."""
        return api_client_from_kubeconfig(self.admin_kubeconfig)

    def resident_memory_kib(self) -> dict[str, int]:
        """Resident set size of each process, to keep the cost of the e2e tier visible."""
        return {name: _rss_kib(pid) for name, pid in self.pids.items()}


@contextlib.contextmanager
def running_control_plane(
    work_dir: Path, startup_timeout: float = STARTUP_TIMEOUT_SECONDS, pods: bool = False
) -> Iterator[ControlPlane]:
    """Start etcd, kube-apiserver and kube-controller-manager; stop all of them on exit, even on error.

    `pods=True` makes a control plane that runs Deployments on the pod network (localenv/podnetwork.py,
    whose bridge must exist): kube-scheduler, the controllers in `POD_CONTROLLERS`, and an API server
    that also listens on the pod gateway and advertises it as the `kubernetes` Service's endpoint.
    """
    started = time.monotonic()
    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    binaries = find_binaries(pods)
    pki = _write_pki(work_dir / "pki")
    admin_token = secrets.token_urlsafe(32)
    token_file = work_dir / "pki" / "tokens.csv"
    node_token = secrets.token_urlsafe(32)
    write_private_file(
        token_file,
        f'{admin_token},admin,admin-uid,"system:masters"\n'
        f'{node_token},system:node:{NODE_NAME},node-uid,"system:nodes"\n',
    )
    etcd_client, etcd_peer, apiserver_port, kcm_port, scheduler_port = free_ports(5)
    server = f"https://127.0.0.1:{apiserver_port}"
    admin_kubeconfig = work_dir / "admin.kubeconfig"
    write_kubeconfig(admin_kubeconfig, server, pki.tls.ca_file, "admin", admin_token)
    node_kubeconfig = work_dir / "node.kubeconfig"
    write_kubeconfig(node_kubeconfig, server, pki.tls.ca_file, f"system:node:{NODE_NAME}", node_token)
    deadline = time.monotonic() + startup_timeout

    with _Supervisor(work_dir / "logs") as supervisor:
        etcd_dir = work_dir / "etcd"
        shutil.rmtree(etcd_dir, ignore_errors=True)
        etcd = supervisor.start(
            "etcd", _etcd_argv(binaries["etcd"], etcd_dir, client_port=etcd_client, peer_port=etcd_peer)
        )
        _wait_until(
            lambda: _http_ok(f"http://127.0.0.1:{etcd_client}/health"), deadline, etcd, "etcd /health"
        )
        apiserver = supervisor.start(
            "kube-apiserver",
            _apiserver_argv(
                binaries["kube-apiserver"],
                pki,
                token_file,
                etcd_port=etcd_client,
                port=apiserver_port,
                pods=pods,
            ),
        )
        ready = _Https(server, pki.tls.ca_file, admin_token)
        _wait_until(lambda: ready.ok("/readyz"), deadline, apiserver, "kube-apiserver /readyz")
        restartable = {
            "etcd": (etcd.argv, lambda: _http_ok(f"http://127.0.0.1:{etcd_client}/health"), "etcd /health"),
            "kube-apiserver": (apiserver.argv, lambda: ready.ok("/readyz"), "kube-apiserver /readyz"),
        }
        kcm = supervisor.start(
            "kube-controller-manager",
            _controller_manager_argv(
                binaries["kube-controller-manager"],
                pki,
                admin_kubeconfig,
                work_dir / "kcm-certs",
                port=kcm_port,
                controllers=CONTROLLERS + POD_CONTROLLERS if pods else CONTROLLERS,
            ),
        )
        pids = {"etcd": etcd.pid, "kube-apiserver": apiserver.pid, "kube-controller-manager": kcm.pid}
        if pods:
            scheduler = supervisor.start(
                "kube-scheduler",
                _scheduler_argv(
                    binaries["kube-scheduler"], admin_kubeconfig, work_dir / "scheduler-certs", scheduler_port
                ),
            )
            pids["kube-scheduler"] = scheduler.pid
        _wait_until(
            lambda: ready.ok("/api/v1/namespaces/default/serviceaccounts/default"),
            deadline,
            kcm,
            "ServiceAccount default/default (created by kube-controller-manager)",
        )
        yield ControlPlane(
            server=server,
            ca_file=pki.tls.ca_file,
            admin_kubeconfig=admin_kubeconfig,
            node_kubeconfig=node_kubeconfig,
            admin_token=admin_token,
            work_dir=work_dir,
            provision_seconds=time.monotonic() - started,
            pids=pids,
            processes=_Processes(supervisor, restartable),
        )


def _etcd_argv(binary: str, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    return [
        binary,
        "--name=e2e",
        f"--data-dir={data_dir}",
        f"--listen-client-urls=http://127.0.0.1:{client_port}",
        f"--advertise-client-urls=http://127.0.0.1:{client_port}",
        f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
        f"--initial-cluster=e2e=http://127.0.0.1:{peer_port}",
        "--initial-cluster-state=new",
        "--logger=zap",
        "--log-level=warn",
    ]


def _apiserver_argv(
    binary: str, pki: _Pki, token_file: Path, etcd_port: int, port: int, pods: bool
) -> list[str]:
    if pods:
        # Pods reach it on the gateway through the `kubernetes` Service, whose endpoint it maintains.
        # It listens on every address, since it takes only one and tests and kubelet use loopback.
        # Kubelet by its InternalIP (the gateway), never by a name that would need a DNS lookup.
        addresses = [
            "--bind-address=0.0.0.0",
            f"--advertise-address={POD_GATEWAY}",
            "--kubelet-preferred-address-types=InternalIP",
        ]
    else:
        # No kubelets and a single apiserver: nothing to reconcile the kubernetes Service to.
        addresses = [
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
        ]
    return [
        binary,
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        *addresses,
        f"--secure-port={port}",
        f"--cert-dir={pki.tls.ca_file.parent}",
        f"--tls-cert-file={pki.tls.cert_file}",
        f"--tls-private-key-file={pki.tls.key_file}",
        f"--client-ca-file={pki.tls.ca_file}",
        "--authorization-mode=Node,RBAC",
        f"--token-auth-file={token_file}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.service_account.public_file}",
        f"--service-account-signing-key-file={pki.service_account.private_file}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
    ]


def _controller_manager_argv(
    binary: str, pki: _Pki, kubeconfig: Path, cert_dir: Path, port: int, controllers: Sequence[str]
) -> list[str]:
    return [
        binary,
        f"--kubeconfig={kubeconfig}",
        f"--controllers={','.join(controllers)}",
        f"--service-account-private-key-file={pki.service_account.private_file}",
        f"--root-ca-file={pki.tls.ca_file}",
        "--use-service-account-credentials=false",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir}",
    ]


def _scheduler_argv(binary: str, kubeconfig: Path, cert_dir: Path, port: int) -> list[str]:
    return [
        binary,
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir}",
    ]


def find_binaries(pods: bool = False) -> dict[str, str]:
    """Locate etcd and the cached control-plane binaries, building the latter on first use.

    `pods=True` adds kube-scheduler (and builds kubelet and kube-proxy, which the node looks up).
    """
    etcd = shutil.which("etcd")
    if etcd is None:
        raise ControlPlaneError(f"etcd not found on PATH; run {INSTALL_DEPS_SCRIPT}")
    names = ("kube-apiserver", "kube-controller-manager", *(["kube-scheduler"] if pods else []))
    return {"etcd": etcd, **built_binaries(names, ["--with-pods"] if pods else [])}


def built_binaries(names: Sequence[str], build_flags: Sequence[str]) -> dict[str, str]:
    """Kubernetes binaries from $SIMACAN_K8S_BIN_DIR, or from the cached build (`BUILD_SCRIPT
    build_flags`, which builds them on first use)."""
    bin_dir_env = os.environ.get("SIMACAN_K8S_BIN_DIR")
    if bin_dir_env:
        bin_dir = Path(bin_dir_env)
    else:
        argv = ["bash", str(BUILD_SCRIPT), *build_flags]
        built = subprocess.run(argv, check=False, capture_output=True, text=True)
        if built.returncode != 0:
            raise ControlPlaneError(f"{' '.join(argv[1:])} failed:\n{_tail(built.stderr)}")
        bin_dir = Path(built.stdout.strip().splitlines()[-1])
    found: dict[str, str] = {}
    for name in names:
        path = bin_dir / name
        if not os.access(path, os.X_OK):
            raise ControlPlaneError(f"{path} is missing or not executable")
        found[name] = str(path)
    return found


def api_client_from_kubeconfig(path: Path) -> client.ApiClient:
    """An ApiClient loaded the way the operator loads its kubeconfig; close it when done."""
    api: client.ApiClient = config.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
    return api


def write_kubeconfig(path: Path, server: str, ca_file: Path, user: str, token: str) -> None:
    """Write a token kubeconfig; JSON is valid YAML, so kubectl and the Python client both read it."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
        "current-context": "e2e",
    }
    write_private_file(path, json.dumps(config, indent=2) + "\n")


# --- processes -------------------------------------------------------------------------------------


@dataclass
class _Started:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid


_live: dict[int, subprocess.Popen[bytes]] = {}
_live_lock = threading.Lock()


def _stop(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> None:
    """Send `signum` by pid (SIGTERM: give it time to flush), wait until it is gone, else kill it."""
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
    with _live_lock:
        _live.pop(process.pid, None)


@atexit.register
def _stop_leftovers() -> None:
    """Fallback for an interpreter that exits without running the context manager's cleanup."""
    with _live_lock:
        leftovers = list(_live.values())
    for process in reversed(leftovers):
        _stop(process)


class _Supervisor:
    """Starts processes with logs in files and stops them in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._started: list[_Started] = []
        self._previous_sigterm: Callable[[int, FrameType | None], Any] | int | None = None

    def __enter__(self) -> _Supervisor:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        if threading.current_thread() is threading.main_thread():
            # A SIGTERMed pytest would otherwise exit without unwinding; raising SystemExit unwinds it.
            current = signal.getsignal(signal.SIGTERM)
            if current == signal.SIG_DFL:
                self._previous_sigterm = current
                signal.signal(signal.SIGTERM, exit_on_sigterm)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for started in reversed(self._started):
            _stop(started.process)
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)

    def start(self, name: str, argv: Sequence[str], log_name: str | None = None) -> _Started:
        log = self._log_dir / f"{log_name or name}.log"
        with log.open("wb") as sink:
            process = spawn(argv, sink)  # its data is throwaway: it dies with us
        with _live_lock:
            _live[process.pid] = process
        started = _Started(name, process, log, list(argv))
        self._started.append(started)
        return started

    def latest(self, name: str) -> _Started:
        return next(s for s in reversed(self._started) if s.name == name)


class _Processes:
    """Kill, stop and restart etcd or kube-apiserver with the same arguments and data, as an
    outage or a crash would, so tests can watch the operator recover without restarting."""

    def __init__(
        self, supervisor: _Supervisor, restartable: dict[str, tuple[list[str], Callable[[], bool], str]]
    ) -> None:
        self._supervisor = supervisor
        self._restartable = restartable

    def kill(self, name: str, signum: int = signal.SIGKILL) -> None:
        """Send `signum` (default SIGKILL: no cleanup) and wait until the process is gone."""
        _stop(self._supervisor.latest(name).process, signum)

    def start(self, name: str, timeout: float = STARTUP_TIMEOUT_SECONDS) -> int:
        """Start `name` again (same flags, same data) and wait until it is healthy; returns its pid."""
        argv, healthy, what = self._restartable[name]
        restarts = sum(1 for s in self._supervisor._started if s.name == name)
        started = self._supervisor.start(name, argv, log_name=f"{name}.{restarts}")
        _wait_until(healthy, time.monotonic() + timeout, started, what)
        return started.pid


def _wait_until(check: Callable[[], bool], deadline: float, process: _Started, what: str) -> None:
    """Poll until `check` passes; fail fast with the log tail if the process dies or time runs out."""
    delay = 0.05
    while True:
        if process.process.poll() is not None:
            raise ControlPlaneError(
                f"{process.name} exited with {process.process.returncode} while waiting for {what}; "
                f"{process.log}:\n{_tail(process.log.read_text(errors='replace'))}"
            )
        if check():
            return
        if time.monotonic() > deadline:
            log_tail = _tail(process.log.read_text(errors="replace"))
            raise ControlPlaneError(f"timed out waiting for {what}; {process.log}:\n{log_tail}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def _tail(text: str) -> str:
    return "\n".join(text.splitlines()[-LOG_TAIL_LINES:])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --- network ---------------------------------------------------------------------------------------


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class _Https:
    """Minimal authenticated GETs against the apiserver, so waiting needs no client library."""

    def __init__(self, server: str, ca_file: Path, token: str) -> None:
        self._server = server
        self._context = ssl.create_default_context(cafile=str(ca_file))
        self._headers = {"Authorization": f"Bearer {token}"}

    def ok(self, path: str) -> bool:
        request = urllib.request.Request(self._server + path, headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=2, context=self._context) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False


# --- PKI -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pki:
    tls: ServingCertificate
    service_account: KeyPairFiles


def _write_pki(directory: Path) -> _Pki:
    """A throwaway CA, an apiserver serving certificate and a ServiceAccount signing key pair."""
    first_service_ip = next(ipaddress.IPv4Network(SERVICE_CLUSTER_IP_RANGE).hosts())
    tls = write_serving_certificate(
        directory,
        ca_name="simacan-e2e-ca",
        common_name="kube-apiserver",
        dns_names=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ip_addresses=("127.0.0.1", str(first_service_ip), POD_GATEWAY),
        validity=datetime.timedelta(days=1),
        file_stem="apiserver",
    )
    return _Pki(tls=tls, service_account=write_rsa_key_pair(directory, "sa"))


# --- CLI -------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`up --dir DIR`: run a control plane in the foreground for manual work; Ctrl-C or SIGTERM stops it."""
    parser = argparse.ArgumentParser(prog="python -m localenv.controlplane")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a control plane and keep it running")
    up.add_argument("--dir", type=Path, required=True, help="work directory for certificates, data and logs")
    args = parser.parse_args(argv)

    with running_control_plane(args.dir) as plane:
        ready = f"ready in {plane.provision_seconds:.1f}s at {plane.server}"
        serve_until_stopped(plane.admin_kubeconfig, f"{ready}; logs in {plane.work_dir / 'logs'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
