"""One ClusterSimacanCredential selecting N namespaces: time until all hold a token, Auth API calls, RSS.

A benchmark to read, not a test. On a throwaway control plane (localenv/controlplane.py) and the
fake Auth API over HTTPS (localenv/fakeauth.py, in this process):

1. Install both CRDs, namespace `platform` with the login Secret, and N namespaces labelled
   `simacan.com/token=fanout`.
2. Start the operator watching all namespaces, then create ClusterSimacanCredential `fanout`
   selecting that label. Time from creating it until its status says all N are served and a
   label-selected list finds N token Secrets; count Auth API calls (one login is the goal).
3. Let it settle, sample RSS. Label one more namespace: time until its Secret appears.
4. Restart the operator: time until the status is Ready again, Auth API calls (zero is the goal),
   RSS after settling.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.cluster_fanout --namespaces 500

Exit status 0 when one login served all namespaces and the restart made none, 1 otherwise,
2 when the benchmark itself failed. Everything it starts is stopped on exit.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client

from benchmarks.child import REPO_ROOT, BenchmarkError, Child, settle, wait_for
from benchmarks.runner import run_guarded
from localenv.controlplane import ControlPlane, running_control_plane
from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import api_client
from localenv.processes import free_ports, kube_env, operator_argv
from simacan_token_operator.model.clusterspec import CLUSTER_PLURAL, OWNER_LABEL
from simacan_token_operator.model.spec import GROUP, VERSION

CRDS = sorted((REPO_ROOT / "crds").glob("*.auth.simacan.com.yaml"))
LABEL, VALUE = "simacan.com/token", "fanout"
USERNAME, PASSWORD = "fleet@example.com", "fan-out-password-0c1d"
WORKERS = 16
POLL_SECONDS = 0.5


def install_crds(api: client.ApiClient) -> None:
    extensions = client.ApiextensionsV1Api(api)
    for path in CRDS:
        body = yaml.safe_load(path.read_text())
        extensions.create_custom_resource_definition(body)
        name = body["metadata"]["name"]

        def established(name: str = name) -> bool:
            crd = extensions.read_custom_resource_definition(name)
            conditions = (crd.status.conditions if crd.status else None) or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        deadline = time.monotonic() + 60
        while not established():
            if time.monotonic() > deadline:
                raise BenchmarkError(f"CRD {name} not Established")
            time.sleep(0.1)


def make_namespaces(api: client.ApiClient, names: Sequence[str], labels: dict[str, str]) -> None:
    core = client.CoreV1Api(api)

    def create(name: str) -> None:
        body: Any = {"metadata": {"name": name, "labels": labels}}
        core.create_namespace(body)

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(create, names))


def start_operator(plane: ControlPlane, fake: FakeAuthAPI, log: Path, python: str) -> tuple[Child, int, int]:
    """The operator watching all namespaces; returns it, its metrics port and its health port."""
    metrics_port, health_port = free_ports(2)
    argv = operator_argv(
        python=python,
        allowed_auth_host=f"127.0.0.1:{fake.port}",
        auth_ca_file=fake.ca_file,
        health_port=health_port,
        metrics_port=metrics_port,
    )
    # The login Secret's namespace, as the Deployment's POD_NAMESPACE names its own (an older
    # operator without --cluster-credentials-namespace ignores it).
    env = kube_env(plane.admin_kubeconfig, POD_NAMESPACE="platform")
    return Child("operator", argv, env, log), metrics_port, health_port


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def reported_ready(metrics_port: int) -> bool:
    """The operator's own word that it has looked at `fanout` and found every namespace served."""
    try:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    except httpx.TransportError:
        return False
    return 'simacan_credential_ready{name="fanout",namespace=""} 1.0' in text


def status(api: client.ApiClient) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api)
    body: Any = custom.get_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL, "fanout")
    found: dict[str, Any] = body.get("status") or {}
    return found


def all_served(api: client.ApiClient, count: int, uid: str) -> bool:
    current = status(api)
    ready = [c for c in current.get("conditions") or [] if c.get("type") == "Ready"]
    if not (current.get("namespaces") == count and current.get("failedCount") == 0 and ready):
        return False
    if ready[0]["status"] != "True":
        return False
    listed = client.CoreV1Api(api).list_secret_for_all_namespaces(label_selector=f"{OWNER_LABEL}={uid}")
    return len(listed.items) == count


def run(options: argparse.Namespace, work: Path) -> int:
    count = options.namespaces
    with (
        running_control_plane(work / "plane") as plane,
        FakeAuthAPI({USERNAME: PASSWORD}, access_lifetime=3600, tls=True) as fake,
        contextlib.closing(api_client(plane.admin_kubeconfig, pool_size=WORKERS)) as api,
    ):
        install_crds(api)
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": "platform"}})  # type: ignore[arg-type]
        login: Any = {
            "metadata": {"name": "login"},
            "stringData": {"username": USERNAME, "password": PASSWORD},
        }
        core.create_namespaced_secret("platform", login)
        began = time.monotonic()
        make_namespaces(api, [f"team-{i:04d}" for i in range(count)], {LABEL: VALUE})
        print(f"created {count} namespaces in {time.monotonic() - began:.1f}s")

        operator, _, health_port = start_operator(plane, fake, work / "operator.log", options.python)
        with operator:
            # Timed from the ClusterSimacanCredential's creation, not from the process start.
            ready_url = f"http://127.0.0.1:{health_port}/readyz"
            wait_for(lambda: answers(ready_url), 60, "operator /readyz", operator, 0.2)
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ClusterSimacanCredential",
                "metadata": {"name": "fanout"},
                "spec": {
                    "credentialsSecretRef": {"name": "login", "namespace": "platform"},
                    "namespaceSelector": {"matchLabels": {LABEL: VALUE}},
                    "secretName": "simacan-token",
                    "authURL": fake.base_url,
                },
            }
            created: Any = client.CustomObjectsApi(api).create_cluster_custom_object(
                GROUP, VERSION, CLUSTER_PLURAL, body
            )
            uid = created["metadata"]["uid"]
            began = time.monotonic()
            wait_for(
                lambda: all_served(api, count, uid), options.timeout, "all served", operator, POLL_SECONDS
            )
            fan_out = time.monotonic() - began
            calls = fake.count()
            settle(operator, options.settle)
            rss = operator.sample().rss_kib

            began = time.monotonic()
            make_namespaces(api, ["late-joiner"], {LABEL: VALUE})
            wait_for(lambda: all_served(api, count + 1, uid), 60, "late joiner served", operator, 0.1)
            joiner = time.monotonic() - began

        fake.reset_counts()
        restarted, metrics_port, _ = start_operator(plane, fake, work / "operator.log", options.python)
        with restarted:
            began = time.monotonic()
            wait_for(lambda: reported_ready(metrics_port), options.timeout, "Ready again", restarted, 0.2)
            restart_seconds = time.monotonic() - began
            settle(restarted, options.settle)
            restart_calls = fake.count()
            restart_rss = restarted.sample().rss_kib
            restart_ready = all_served(api, count + 1, uid)

    print(f"namespaces selected:                 {count}")
    print(f"time from create to all served:      {fan_out:.1f}s")
    print(f"Auth API calls:                      {calls} (login and refresh)")
    print(f"operator RSS, settled:               {rss / 1024:.1f} MiB")
    print(f"a namespace labelled later, served:  {joiner:.2f}s")
    print(f"after a restart: Ready again in:     {restart_seconds:.1f}s (from process start)")
    print(f"after a restart: Auth API calls:     {restart_calls}; all served: {restart_ready}")
    print(f"after a restart: operator RSS:       {restart_rss / 1024:.1f} MiB")
    if options.log is not None:
        shutil.copyfile(work / "operator.log", options.log)
    return 0 if calls == 1 and restart_calls == 0 and restart_ready else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster_fanout", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--namespaces", type=int, default=500)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to idle before sampling RSS")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--log", type=Path, help="keep the operator's log here")
    parser.add_argument("--python", default=sys.executable, help="interpreter with the operator installed")
    options = parser.parse_args(argv)
    return run_guarded(lambda work: run(options, work), None, "cluster-fanout-")


if __name__ == "__main__":
    sys.exit(main())
