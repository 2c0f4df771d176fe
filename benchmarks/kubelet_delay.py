"""How long kubelet takes to show a changed Secret to a running pod that mounts it, at its default settings.

The operator's margin (a refresh two thirds into the token's lifetime) must exceed this delay, and
docs/usage.md quotes it. This is a measurement for people to read, not a test; nothing in the test
suite depends on it.

Everything runs on this machine: a throwaway control plane (localenv/controlplane.py) and a real node
(localenv/node.py: containerd and kubelet, with kubelet's default syncFrequency of 1 minute unless
--sync-frequency is given). A pod (localenv/token_reader.py) mounts Secret `fleet-api` as a volume
and logs the SHA-256 of the file every second. For each sample the script waits a random time (so
writes fall at random points of kubelet's sync loop), writes a new value into the Secret (one API
write, as the operator makes), and measures until the pod's log first shows it. The pod reads once a
second, so a figure may be up to 1 s late.

Usage (from the repository root; needs root, like the node)::

    .venv/bin/python -m benchmarks.kubelet_delay                  # 6 samples at kubelet's defaults
    .venv/bin/python -m benchmarks.kubelet_delay --samples 3 --sync-frequency 10s

Exit status: 0 with figures printed, 2 when the measurement itself failed. Everything it starts is stopped
on exit, on errors and on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from localenv.controlplane import ControlPlaneError, running_control_plane
from localenv.node import Node, running_node
from localenv.token_reader import CONTAINER, digest, pod_manifest, readings

NAMESPACE = "default"
MOUNTED_OBJECT = "fleet-api"
POD = "reader"
DEFAULT_SYNC_SECONDS = 60.0
POLL_SECONDS = 0.2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=6, help="Secret updates to time (default 6)")
    parser.add_argument(
        "--sync-frequency", default=None, help="kubelet syncFrequency, e.g. 10s (default: kubelet's own, 1m)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args(argv)
    period = _seconds(args.sync_frequency) if args.sync_frequency else DEFAULT_SYNC_SECONDS

    with tempfile.TemporaryDirectory(prefix="kubelet-delay-") as scratch:
        work_dir = args.dir or Path(scratch)
        try:
            delays = _measure(work_dir, args.sync_frequency, args.samples, period)
        except (ControlPlaneError, TimeoutError) as error:
            print(f"measurement failed: {error}", file=sys.stderr)
            return 2
    setting = args.sync_frequency or "1m (kubelet's default)"
    print(
        f"kubelet syncFrequency {setting}: Secret write -> file in a running pod's volume, "
        f"{len(delays)} samples: min {min(delays):.1f}s, median {statistics.median(delays):.1f}s, "
        f"max {max(delays):.1f}s"
    )
    return 0


def _measure(work_dir: Path, sync_frequency: str | None, samples: int, period: float) -> list[float]:
    with (
        running_control_plane(work_dir) as plane,
        running_node(plane, work_dir, sync_frequency=sync_frequency) as node,
        plane.admin_api_client() as api,
    ):
        core = client.CoreV1Api(api)
        value = secrets.token_urlsafe(32)
        body: Any = {"metadata": {"name": MOUNTED_OBJECT}, "stringData": {"token": value}}
        core.create_namespaced_secret(NAMESPACE, body)
        pod: Any = pod_manifest(POD, MOUNTED_OBJECT, node.name)
        core.create_namespaced_pod(NAMESPACE, pod)
        _wait_for(node, value, timeout=120)
        print(
            f"node ready in {node.provision_seconds:.1f}s; pod running; timing {samples} updates", flush=True
        )

        delays: list[float] = []
        for sample in range(1, samples + 1):
            time.sleep(random.uniform(0, period * 1.5))  # noqa: S311 - a random phase, not a secret
            value = secrets.token_urlsafe(32)
            core.patch_namespaced_secret(MOUNTED_OBJECT, NAMESPACE, {"stringData": {"token": value}})
            written = time.time()
            seen = _wait_for(node, value, timeout=period * 3 + 30)
            delays.append(seen - written)
            print(f"sample {sample}: {seen - written:.1f}s", flush=True)
        return delays


def _wait_for(node: Node, value: str, timeout: float) -> float:
    """When the pod's log first shows `value` in the mounted file (containerd's timestamp)."""
    wanted = digest(value)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for reading in readings(node.container_log(NAMESPACE, POD, CONTAINER)):
            if reading.mounted == wanted:
                return reading.at
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"the pod did not see the new Secret value within {timeout:.0f}s")


def _seconds(duration: str) -> float:
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    if not duration or duration[-1] not in units or not duration[:-1].replace(".", "", 1).isdigit():
        raise SystemExit(f"--sync-frequency {duration!r}: use a number with s, m or h, e.g. 10s")
    return float(duration[:-1]) * units[duration[-1]]


if __name__ == "__main__":
    raise SystemExit(main())
