"""A real node for a running control plane: containerd and kubelet as local processes.

The control plane alone has no kubelet, so nothing there mounts a Secret into a container. This adds one
node (`controlplane.NODE_NAME`) the way the feasibility check found it works on a cgroup v1 machine
without a registry: Debian's containerd and runc with their own root, state and socket, images built
here from busybox (`localenv.images`), and kubelet built from the same Go module as the control plane.

By default the node has no CNI: it stays NotReady, there is no scheduler, so pods set `nodeName`,
`hostNetwork: true` and `automountServiceAccountToken: false`. With `pods=True` (and a control plane
started with `pods=True`) it is a node that runs Deployments as they are: a pod network
(`localenv.podnetwork`), kube-proxy, and the node turns Ready. Every process is stopped by its PID, every
mount under the work directory is unmounted, and the kernel settings kubelet changes are put back.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localenv.controlplane import (
    INSTALL_DEPS_SCRIPT,
    NODE_NAME,
    SERVICE_CLUSTER_IP_RANGE,
    ControlPlane,
    ControlPlaneError,
    _Started,
    _stop,
    _Supervisor,
    _wait_until,
    built_binaries,
    running_control_plane,
)
from localenv.images import PAUSE_IMAGE, write_node_images
from localenv.podnetwork import (
    CNI_PLUGIN_DIR,
    POD_GATEWAY,
    host_bridge,
    remove_kube_proxy_rules,
    write_cni_config,
    write_kube_proxy_config,
)
from localenv.podnetwork import KERNEL_TUNABLES as POD_NETWORK_TUNABLES
from localenv.processes import free_ports, serve_until_stopped

STARTUP_TIMEOUT_SECONDS = 120.0
COMMAND_TIMEOUT_SECONDS = 60.0
CI_SYNC_FREQUENCY = "10s"
LEGACY_CONTAINER_LOGS = Path("/var/log/containers")
# Kubelet sets these when it starts (vm.overcommit_memory=1, kernel.panic=10, ...); they are restored on stop.
KERNEL_TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)


class NodeError(ControlPlaneError):
    """The node could not be started or used."""


@dataclass(frozen=True)
class LogLine:
    """One line a container wrote, stamped by containerd when it arrived."""

    at: datetime.datetime
    text: str


@dataclass(frozen=True)
class Node:
    """How to reach a running node; valid only inside `running_node`."""

    name: str
    work_dir: Path
    pod_logs_dir: Path
    sync_frequency: str
    provision_seconds: float
    pids: dict[str, int]
    ctr: _Ctr | None = None
    """containerd's client; None for a Node made only to read logs."""

    def import_image(self, archive: Path) -> None:
        """Load an image archive into the node's containerd, as a pull would (no registry here)."""
        assert self.ctr is not None, "a Node without containerd"
        self.ctr.import_image(archive)

    def container_pid(self, container_id: str) -> int:
        """The host PID of a running container's first process (`containerd://` prefix allowed)."""
        wanted = container_id.removeprefix("containerd://")
        assert self.ctr is not None, "a Node without containerd"
        for line in self.ctr.run("tasks", "list").splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3 and fields[0] == wanted and fields[2] == "RUNNING":
                return int(fields[1])
        raise NodeError(f"container {wanted} has no running task")

    def container_log(self, namespace: str, pod: str, container: str) -> list[LogLine]:
        """Complete lines of the container's log (kubelet's CRI log format), oldest first."""
        lines: list[LogLine] = []
        for path in sorted(self.pod_logs_dir.glob(f"{namespace}_{pod}_*/{container}/*.log")):
            for raw in path.read_text(errors="replace").splitlines():
                parsed = _parse_cri_log_line(raw)
                if parsed is not None:
                    lines.append(parsed)
        return lines


@contextlib.contextmanager
def running_node(
    plane: ControlPlane,
    work_dir: Path,
    sync_frequency: str | None = CI_SYNC_FREQUENCY,
    startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
    pods: bool = False,
) -> Iterator[Node]:
    """Start containerd and kubelet for `plane`, wait until the Node is registered; tear all down on exit.

    `sync_frequency=None` keeps kubelet's default (1 minute), which sets how late a mounted Secret updates.
    `pods=True` adds the pod network and kube-proxy and waits until the Node is Ready.
    """
    started = time.monotonic()
    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    binaries = find_node_binaries(pods)
    layout = _Layout(work_dir)
    layout.create()
    images = write_node_images(layout.images)
    _write_containerd_config(layout, CNI_PLUGIN_DIR if pods else layout.cni / "bin")
    kubelet_port, healthz_port, proxy_healthz_port, proxy_metrics_port = free_ports(4)
    _write_kubelet_config(layout, kubelet_port, healthz_port, sync_frequency)
    deadline = time.monotonic() + startup_timeout
    # The pod network's settings only for a pod network: a node without one, stopping while another
    # runs beside it, must not turn off that one's forwarding.
    tunables = _read_tunables(KERNEL_TUNABLES + (POD_NETWORK_TUNABLES if pods else ()))

    try:
        with contextlib.ExitStack() as network, _Supervisor(layout.logs) as supervisor:
            if pods:
                network.enter_context(host_bridge())
                write_cni_config(layout.cni / "conf", layout.root / "cni-ipam", SERVICE_CLUSTER_IP_RANGE)
                network.callback(remove_kube_proxy_rules, binaries["kube-proxy"])
            containerd = supervisor.start(
                "containerd", [binaries["containerd"], "--config", str(layout.containerd_config)]
            )
            ctr = _Ctr(binaries["ctr"], layout.containerd_socket)
            _wait_until(ctr.ready, deadline, containerd, "containerd socket")
            kubelet: _Started | None = None
            try:
                for archive in images.values():
                    ctr.import_image(archive)
                kubelet = supervisor.start("kubelet", _kubelet_argv(binaries["kubelet"], plane, layout, pods))
                _wait_until(
                    lambda: _node_registered(plane), deadline, kubelet, f"Node {NODE_NAME} registered"
                )
                pids = {"containerd": containerd.pid, "kubelet": kubelet.pid}
                if pods:
                    proxy_config = layout.root / "kube-proxy.json"
                    write_kube_proxy_config(
                        proxy_config,
                        plane.admin_kubeconfig,
                        NODE_NAME,
                        proxy_healthz_port,
                        proxy_metrics_port,
                    )
                    proxy = supervisor.start(
                        "kube-proxy", [binaries["kube-proxy"], f"--config={proxy_config}"]
                    )
                    pids["kube-proxy"] = proxy.pid
                    _wait_until(lambda: _node_ready(plane), deadline, kubelet, f"Node {NODE_NAME} Ready")
                yield Node(
                    name=NODE_NAME,
                    work_dir=work_dir,
                    pod_logs_dir=layout.pod_logs,
                    sync_frequency=sync_frequency or "1m (default)",
                    provision_seconds=time.monotonic() - started,
                    pids=pids,
                    ctr=ctr,
                )
            finally:
                # Kubelet first, so it restarts nothing; then the containers, whose shims outlive containerd.
                if kubelet is not None:
                    _stop(kubelet.process)
                ctr.remove_all_containers()
    finally:
        _stop_orphan_shims(layout.containerd_socket)
        _unmount_under(work_dir)
        _remove_legacy_log_links(layout.pod_logs)
        _restore_tunables(tunables)
        shutil.rmtree(layout.root, ignore_errors=True)


def find_node_binaries(pods: bool = False) -> dict[str, str]:
    """kubelet (and for `pods`, kube-proxy) from the cached build (built on first use); containerd,
    ctr and runc from Debian.

    containerd finds the shim, and the shim runc, on PATH, so all of them must be on ours.
    """
    found: dict[str, str] = {}
    for name in ("containerd", "containerd-shim-runc-v2", "ctr", "runc"):
        path = shutil.which(name)
        if path is None:
            raise NodeError(f"{name} not found on PATH; run {INSTALL_DEPS_SCRIPT}")
        found[name] = path
    if pods:
        return found | built_binaries(("kubelet", "kube-proxy"), ["--with-pods"])
    return found | built_binaries(("kubelet",), ["--with-kubelet"])


# --- layout and configuration ----------------------------------------------------------------------


class _Layout:
    """Where the node keeps its state: everything below one directory that is removed on stop."""

    def __init__(self, work_dir: Path) -> None:
        self.root = work_dir / "node"
        self.logs = work_dir / "node-logs"
        self.images = self.root / "images"
        self.containerd_root = self.root / "containerd"
        self.containerd_state = self.root / "containerd-state"
        self.containerd_socket = self.root / "containerd.sock"
        self.containerd_config = self.root / "containerd.toml"
        self.cni = self.root / "cni"
        self.kubelet_root = self.root / "kubelet"
        self.kubelet_config = self.root / "kubelet.json"
        self.pod_logs = self.root / "pods"

    def create(self) -> None:
        # Unix sockets live here, and their paths are limited to 107 bytes.
        if len(str(self.containerd_socket)) > 100:
            raise NodeError(f"work directory path too long for a unix socket: {self.containerd_socket}")
        shutil.rmtree(self.root, ignore_errors=True)
        for directory in (self.root, self.logs, self.cni / "bin", self.cni / "conf", self.kubelet_root):
            directory.mkdir(parents=True, exist_ok=True)
        self.pod_logs.mkdir(mode=0o755, exist_ok=True)


def _write_containerd_config(layout: _Layout, cni_bin_dir: Path) -> None:
    """CRI with the native snapshotter; `restrict_oom_score_adj`, or runc fails setting -998 here."""
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    layout.containerd_config.write_text(
        "\n".join(
            [
                "version = 2",
                f'root = "{layout.containerd_root}"',
                f'state = "{layout.containerd_state}"',
                "[grpc]",
                f'  address = "{layout.containerd_socket}"',
                "[ttrpc]",
                f'  address = "{layout.containerd_socket}.ttrpc"',
                "[debug]",
                '  address = ""',
                "[metrics]",
                '  address = ""',
                '[plugins."io.containerd.internal.v1.opt"]',
                f'  path = "{layout.containerd_root / "opt"}"',
                cri,
                f'  sandbox_image = "{PAUSE_IMAGE}"',
                "  restrict_oom_score_adj = true",
                '  stream_server_address = "127.0.0.1"',
                '  stream_server_port = "0"',
                f"{cri[:-1]}.containerd]",
                '  snapshotter = "native"',
                '  default_runtime_name = "runc"',
                f"{cri[:-1]}.containerd.runtimes.runc]",
                '  runtime_type = "io.containerd.runc.v2"',
                f"{cri[:-1]}.containerd.runtimes.runc.options]",
                f'  Root = "{layout.containerd_state / "runc"}"',
                f"{cri[:-1]}.cni]",
                f'  bin_dir = "{cni_bin_dir}"',
                f'  conf_dir = "{layout.cni / "conf"}"',
                "",
            ]
        )
    )


def _write_kubelet_config(layout: _Layout, port: int, healthz_port: int, sync_frequency: str | None) -> None:
    """What kubelet needs on this machine (cgroup v1, no QoS cgroups, swap); its state under `layout`."""
    config: dict[str, object] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "127.0.0.1",
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        # Nobody calls the kubelet's API in the tests: refuse everyone.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "localStorageCapacityIsolation": False,
        # Never evict or garbage-collect images because of the host's disk (as kind does).
        "evictionHard": {"nodefs.available": "0%", "nodefs.inodesFree": "0%", "imagefs.available": "0%"},
        "imageGCHighThresholdPercent": 100,
        "podLogsDir": str(layout.pod_logs),
        "volumePluginDir": str(layout.kubelet_root / "volume-plugins"),
        "resolvConf": "/etc/resolv.conf" if Path("/etc/resolv.conf").exists() else "",
    }
    if sync_frequency is not None:
        config["syncFrequency"] = sync_frequency
    layout.kubelet_config.write_text(json.dumps(config, indent=2) + "\n")


def _kubelet_argv(binary: str, plane: ControlPlane, layout: _Layout, pods: bool) -> list[str]:
    # Without a pod network no --node-ip: kubelet refuses a loopback one and nothing connects to it.
    node_ip = [f"--node-ip={POD_GATEWAY}"] if pods else []
    return [
        binary,
        f"--config={layout.kubelet_config}",
        f"--kubeconfig={plane.node_kubeconfig}",
        f"--root-dir={layout.kubelet_root}",
        f"--cert-dir={layout.kubelet_root / 'pki'}",
        f"--hostname-override={NODE_NAME}",
        *node_ip,
    ]


def _node_registered(plane: ControlPlane) -> bool:
    with plane.admin_api_client() as api:
        try:
            client.CoreV1Api(api).read_node(NODE_NAME)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
    return True


def _node_ready(plane: ControlPlane) -> bool:
    with plane.admin_api_client() as api:
        node = client.CoreV1Api(api).read_node(NODE_NAME)
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


# --- containerd ------------------------------------------------------------------------------------


class _Ctr:
    """containerd's own client against this node's socket, in the namespace the CRI uses."""

    def __init__(self, binary: str, socket: Path) -> None:
        self._argv = [binary, "--address", str(socket), "--namespace", "k8s.io"]
        self._socket = socket

    def run(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [*self._argv, *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS, check=False
        )
        if check and result.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def import_image(self, archive: Path) -> None:
        self.run("images", "import", "--snapshotter", "native", str(archive))

    def ready(self) -> bool:
        return (
            self._socket.exists()
            and subprocess.run(
                [*self._argv, "version"], capture_output=True, timeout=COMMAND_TIMEOUT_SECONDS, check=False
            ).returncode
            == 0
        )

    def remove_all_containers(self) -> None:
        """Kill and delete every task and container, so the shims exit and the rootfs mounts go away."""
        if not self.ready():
            return
        for task in self.run("tasks", "list", "--quiet", check=False).split():
            self.run("tasks", "delete", "--force", task, check=False)
        for container in self.run("containers", "list", "--quiet", check=False).split():
            self.run("containers", "delete", container, check=False)


def _stop_orphan_shims(socket: Path) -> None:
    """Shims started for this node's containerd (found by its socket in their arguments), by PID."""
    marker = str(socket).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and marker in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


# --- host cleanup ----------------------------------------------------------------------------------


def _unmount_under(directory: Path) -> None:
    """Kubelet's tmpfs Secret volumes and its shared bind mount of its root, deepest first."""
    prefix = str(directory).rstrip("/") + "/"
    mount_points: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(prefix):
            mount_points.append(point)
    for point in sorted(mount_points, key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


def _remove_legacy_log_links(pod_logs: Path) -> None:
    """Kubelet also links each container log from /var/log/containers; drop the links into our logs."""
    if not LEGACY_CONTAINER_LOGS.is_dir():
        return
    for link in LEGACY_CONTAINER_LOGS.iterdir():
        if link.is_symlink() and os.readlink(link).startswith(str(pod_logs)):
            link.unlink(missing_ok=True)


def _read_tunables(names: Sequence[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in names:
        with contextlib.suppress(OSError):
            values[name] = (Path("/proc/sys") / name).read_text().strip()
    return values


def _restore_tunables(values: dict[str, str]) -> None:
    for name, value in values.items():
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / name).write_text(value + "\n")


# --- logs ------------------------------------------------------------------------------------------


def _parse_cri_log_line(raw: str) -> LogLine | None:
    """`<RFC 3339 nano> <stream> <F|P> <text>`; partial lines (P) are skipped."""
    parts = raw.split(" ", 3)
    if len(parts) < 3 or parts[2] != "F":
        return None
    stamp = parts[0]
    # Python parses at most microseconds: cut the nanoseconds to six digits.
    if "." in stamp:
        head, _, fraction = stamp.partition(".")
        digits = fraction.rstrip("Z").split("+")[0].split("-")[0]
        zone = fraction[len(digits) :]
        stamp = f"{head}.{digits[:6]}{zone}"
    try:
        at = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return LogLine(at=at, text=parts[3] if len(parts) > 3 else "")


# --- CLI -------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`up --dir DIR`: a control plane with one node in the foreground; Ctrl-C or SIGTERM stops both."""
    parser = argparse.ArgumentParser(prog="python -m localenv.node")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a control plane and a node and keep them running")
    up.add_argument("--dir", type=Path, required=True, help="work directory for certificates, data and logs")
    up.add_argument("--sync-frequency", default=None, help="kubelet syncFrequency (default: kubelet's, 1m)")
    args = parser.parse_args(argv)

    with running_control_plane(args.dir) as plane, running_node(plane, args.dir, args.sync_frequency) as node:
        logs = args.dir / "node-logs"
        serve_until_stopped(
            plane.admin_kubeconfig, f"node {node.name} ready in {node.provision_seconds:.1f}s; logs in {logs}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
