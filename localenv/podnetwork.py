"""A pod network for the e2e node: a host bridge, CNI's bridge plugin and kube-proxy.

Pods of a Deployment get their own network namespaces (containerd's CRI makes them through CNI), so
the node needs a network they live on, an API server they can reach and a `kubernetes` Service that
leads there. This machine lets traffic go only to loopback or into network namespaces the test run
itself created, so the pod network is closed: a bridge on the host owns the gateway address (the API
server and the fake Auth API listen there), and pods get routes to the pod subnet and the Service
range only, no default route, so nothing a pod sends can leave the machine. kube-proxy (iptables mode)
turns the Service addresses into pod or gateway addresses, as on a real node.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

POD_SUBNET = "10.244.0.0/24"
POD_GATEWAY = "10.244.0.1"
"""The host's address on the pod network: where pods reach the API server and the fake Auth API."""
BRIDGE = "simacan-e2e0"
CNI_PLUGIN_DIR = Path("/usr/lib/cni")
"""Debian's containernetworking-plugins."""
NETWORK_NAME = "simacan-e2e"
NETNS_DIR = Path("/var/run/netns")
LOCK_FILE = Path("/run/lock/simacan-pod-network.lock")
"""One bridge name, one subnet: a second pod network on the machine would take over the first one's."""
# Set by the bridge plugin (forwarding for a gateway) and needed for Service traffic between pods on
# one bridge; both are put back on stop.
KERNEL_TUNABLES = ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables")


class PodNetworkError(RuntimeError):
    """The pod network could not be set up."""


def write_cni_config(conf_dir: Path, ipam_dir: Path, service_range: str) -> None:
    """One bridge network; routes only to the pod subnet (implicit) and the Service range."""
    config = {
        "cniVersion": "0.4.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                    "routes": [{"dst": service_range}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / f"10-{NETWORK_NAME}.conflist").write_text(json.dumps(config, indent=2) + "\n")


@contextlib.contextmanager
def host_bridge() -> Iterator[None]:
    """The bridge with the gateway address, before anything binds to it; removed (with its veths) on exit.

    Made here rather than by the CNI plugin so that the API server can advertise, and kubelet report,
    the gateway address before the first pod exists. Pod network namespaces that containerd leaves
    behind are deleted too.
    """
    if not (CNI_PLUGIN_DIR / "bridge").exists():
        raise PodNetworkError(
            f"{CNI_PLUGIN_DIR}/bridge missing: install Debian's containernetworking-plugins"
        )
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PodNetworkError(
                f"another pod network runs on this machine ({LOCK_FILE} is locked): one at a time, so run "
                "the tests that use it on one pytest-xdist worker (--dist loadfile)"
            ) from None
        namespaces_before = _pod_namespaces()
        _ip("link", "delete", BRIDGE, check=False)  # left by a run that was killed
        _ip("link", "add", BRIDGE, "type", "bridge")
        try:
            _ip("address", "add", f"{POD_GATEWAY}/{POD_SUBNET.split('/')[1]}", "dev", BRIDGE)
            _ip("link", "set", BRIDGE, "up")
            yield
        finally:
            for name in _pod_namespaces() - namespaces_before:
                _ip("netns", "delete", name, check=False)
            _ip("link", "delete", BRIDGE, check=False)


def write_kube_proxy_config(
    path: Path, kubeconfig: Path, hostname: str, healthz_port: int, metrics_port: int
) -> None:
    """iptables mode, loopback-only listeners, and no changes to conntrack's kernel settings."""
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": hostname,
        "mode": "iptables",
        "clusterCIDR": POD_SUBNET,
        "bindAddress": POD_GATEWAY,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "nodePortAddresses": [f"{POD_GATEWAY}/32"],
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }
    path.write_text(json.dumps(config, indent=2) + "\n")


def remove_kube_proxy_rules(kube_proxy: str) -> None:
    """kube-proxy leaves its iptables chains behind when stopped; its own cleanup mode removes them."""
    subprocess.run([kube_proxy, "--cleanup"], capture_output=True, timeout=60, check=False)


def _pod_namespaces() -> set[str]:
    return {entry.name for entry in NETNS_DIR.glob("cni-*")} if NETNS_DIR.is_dir() else set()


def _ip(*args: str, check: bool = True) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise PodNetworkError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
