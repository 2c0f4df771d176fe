"""Requests the operator makes of the API server per token Secret write, in steady state.

Counted by kube-apiserver itself (`apiserver_request_total` on its /metrics, read as admin), so
nothing the operator reports about itself is trusted. The measurement (issue "two requests per
refresh"):

1. A throwaway control plane (localenv/controlplane.py), the CRD, namespace `bench`, one login
   Secret and N SimacanCredentials sharing it; the fake Auth API issues tokens of lifetime L.
2. One operator process without leader election, `--namespace bench`.
3. Once every token Secret exists, wait 5 s; then read the counters, wait 4 L, read them again.
   Numerator: the increase for secrets, simacancredentials (with /status), events, leases,
   deployments, statefulsets, daemonsets and namespaces, all verbs and codes. Denominator: the
   increase of 2xx POST + PUT + PATCH on secrets (token Secret writes).

Pass: at most 2.2 requests per Secret write and at most 0.1 Secret GETs per write.

`python -m benchmarks.compare` makes the same count (localenv/apiserver_requests.py) for every
contender side by side, with the plain loop and the cron loop; this module keeps the gate and the
one-credential-per-namespace layout.

It also prints the first sync: from the operator's exec to the last token Secret's
creationTimestamp, and to the last status write (the status subresource's managedFields time),
both as the API server records them (to the second). `--first-sync` stops there.

`--layout namespaces` puts one credential (and its login Secret) in each of N namespaces and
runs the operator with one `--namespace` per namespace (reported, not gated: it shows the
per-namespace workload lists).

Usage (from the repository root)::

    python -m benchmarks.api_traffic                    # N = 200, L = 30 s (gated)
    python -m benchmarks.api_traffic --large            # N = 2,000, L = 60 s
    python -m benchmarks.api_traffic --layout namespaces -n 50
    python -m benchmarks.api_traffic --large --first-sync   # first sync only, no window

Exit status: 0 when the targets are met (always 0 for the namespaces layout), 1 when not, 2 when
the benchmark itself failed. Only the window (and the 5 s before it) is a fixed wait; everything
else polls with a deadline. Everything it starts is stopped on exit.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kubernetes import client

from benchmarks.child import Child, settle, wait_for
from benchmarks.footprint import CREATE_WORKERS, install_crd, problem_lines
from benchmarks.runner import benchmark_parser, operator_revision, run_guarded
from localenv.apiserver_requests import (
    MAX_REQUESTS_PER_WRITE,
    MAX_SECRET_GETS_PER_WRITE,
    SETTLE_AFTER_LAST_SECRET,
    WINDOW_LIFETIMES,
    increase,
    request_counts,
    secret_gets,
    secret_writes,
    to_json,
    wait_until_collected,
)
from localenv.controlplane import ControlPlane, running_control_plane
from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import api_client
from localenv.processes import free_ports, kube_env, operator_argv
from simacan_token_operator.model.spec import GROUP, PLURAL, VERSION
from simacan_token_operator.reconcile.tokensecret import MANAGED_BY, MANAGED_BY_LABEL

NAMESPACE = "bench"
STATUS_POLL_SECONDS = 2.0
"""Between lists of every credential while waiting for their statuses. Each list of 2,000 takes
the API server 0.5-1.2 s (audit log): polled every 0.5 s, it took a core from the writes it
times. The figure is the API server's own timestamps, so polling less often does not change it."""


# --- the cluster ---------------------------------------------------------------------------------


def populate(api: client.ApiClient, namespaces: Sequence[str], per_namespace: int, auth_url: str) -> None:
    """Each namespace gets one login Secret and `per_namespace` credentials using it."""
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)

    def create_namespace(namespace: str) -> None:
        body: Any = {"metadata": {"name": namespace}}
        core.create_namespace(body)
        login: Any = {
            "metadata": {"name": "login"},
            "type": "Opaque",
            "stringData": {"username": "bench@example.com", "password": "bench-password"},
        }
        core.create_namespaced_secret(namespace, login, _preload_content=False)

    def create_credential(job: tuple[str, int]) -> None:
        namespace, index = job
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SimacanCredential",
            "metadata": {"name": f"cred-{index:05d}"},
            "spec": {"credentialsSecretRef": {"name": "login"}, "authURL": auth_url},
        }
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, _preload_content=False
        )

    jobs = [(namespace, index) for namespace in namespaces for index in range(per_namespace)]
    with concurrent.futures.ThreadPoolExecutor(CREATE_WORKERS) as pool:
        list(pool.map(create_namespace, namespaces))
        list(pool.map(create_credential, jobs))


def _token_secret_items(api: client.ApiClient, namespaces: Sequence[str]) -> list[dict[str, Any]]:
    """The token Secrets that exist (by the managed-by label), as listed."""
    core = client.CoreV1Api(api)
    selector = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
    if len(namespaces) == 1:
        listed = core.list_namespaced_secret(namespaces[0], label_selector=selector, _preload_content=False)
    else:
        listed = core.list_secret_for_all_namespaces(label_selector=selector, _preload_content=False)
    items: list[dict[str, Any]] = json.loads(listed.data).get("items") or []  # type: ignore[attr-defined]
    return items


def token_secrets(api: client.ApiClient, namespaces: Sequence[str]) -> int:
    return len(_token_secret_items(api, namespaces))


def _stamp(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def last_secret_created(api: client.ApiClient, namespaces: Sequence[str]) -> float:
    """The latest creationTimestamp among the token Secrets (epoch seconds, whole seconds)."""
    items = _token_secret_items(api, namespaces)
    return max(_stamp(item["metadata"]["creationTimestamp"]) for item in items)


def last_status_written(api: client.ApiClient, namespaces: Sequence[str], expected: int) -> float | None:
    """When every credential says Ready=True: the latest status write (the managedFields time of
    the status subresource, epoch seconds, whole seconds); None while some are not Ready."""
    custom = client.CustomObjectsApi(api)
    if len(namespaces) == 1:
        listed = custom.list_namespaced_custom_object(
            GROUP, VERSION, namespaces[0], PLURAL, _preload_content=False
        )
    else:
        listed = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _preload_content=False)
    items = json.loads(listed.data).get("items") or []  # type: ignore[attr-defined]
    ready = [
        item
        for item in items
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (item.get("status") or {}).get("conditions") or []
        )
    ]
    if len(ready) < expected:
        return None
    return max(
        _stamp(entry["time"])
        for item in ready
        for entry in item["metadata"].get("managedFields") or []
        if entry.get("subresource") == "status" and entry.get("time")
    )


def start_operator(
    plane: ControlPlane, fake: FakeAuthAPI, namespaces: Sequence[str], log: Path, python: str
) -> Child:
    health_port, metrics_port = free_ports(2)
    argv = operator_argv(
        health_port=health_port,
        metrics_port=metrics_port,
        allowed_auth_host=f"127.0.0.1:{fake.port}",
        auth_ca_file=fake.ca_file,
        python=python,
        extra=[arg for namespace in namespaces for arg in ("--namespace", namespace)],
    )
    return Child("operator", argv, kube_env(plane.admin_kubeconfig), log)


# --- the run -------------------------------------------------------------------------------------


def measure(options: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    if options.layout == "namespaces":
        namespaces = [f"bench-{index:03d}" for index in range(options.credentials)]
        per_namespace = 1
    else:
        namespaces, per_namespace = [NAMESPACE], options.credentials
    revision = operator_revision()
    users = {"bench@example.com": "bench-password"}
    with (
        running_control_plane(work_dir / "cluster") as plane,
        FakeAuthAPI(users, access_lifetime=options.lifetime, tls=True) as fake,
        contextlib.closing(api_client(plane.admin_kubeconfig, pool_size=CREATE_WORKERS)) as api,
    ):
        install_crd(api)
        populate(api, namespaces, per_namespace, fake.base_url)
        print(f"created {options.credentials} credentials in {len(namespaces)} namespace(s)", flush=True)
        waited = wait_until_collected(plane, "simacancredentials")
        print(f"kube-controller-manager's garbage collector listed them after {waited:.0f}s", flush=True)
        log = work_dir / "operator.log"
        exec_at = time.time()
        with start_operator(plane, fake, namespaces, log, options.python) as operator:
            wait_for(
                lambda: token_secrets(api, namespaces) >= options.credentials or None,
                options.timeout,
                f"{options.credentials} token Secrets",
                operator,
                1.0,
            )
            print(
                f"every token Secret exists {time.monotonic() - operator.started_at:.1f}s after start",
                flush=True,
            )
            secrets_at = last_secret_created(api, namespaces) - exec_at
            statuses_at = (
                wait_for(
                    lambda: last_status_written(api, namespaces, options.credentials),
                    options.timeout,
                    f"{options.credentials} Ready statuses",
                    operator,
                    STATUS_POLL_SECONDS,
                )
                - exec_at
            )
            print(
                f"first sync: last token Secret created {secrets_at:.1f}s after the operator's exec, "
                f"last status written {statuses_at:.1f}s after (API-server timestamps, to the second)",
                flush=True,
            )
            if options.first_sync:
                return {"first_sync_secrets": secrets_at, "first_sync_statuses": statuses_at}
            settle(operator, SETTLE_AFTER_LAST_SECRET)
            logins, refreshes = fake.count("password"), fake.count("refresh")
            before = request_counts(plane)
            window = WINDOW_LIFETIMES * options.lifetime
            settle(operator, window)
            after = request_counts(plane)
            auth_calls = fake.count("password") - logins + fake.count("refresh") - refreshes
        counts = increase(before, after)
        return {
            "revision": revision,
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
            "layout": options.layout,
            "credentials": options.credentials,
            "namespaces": len(namespaces),
            "lifetime": options.lifetime,
            "window": window,
            "auth_calls": auth_calls,
            "counts": to_json(counts),
            "requests": sum(counts.values()),
            "secret_writes": secret_writes(counts),
            "secret_gets": secret_gets(counts),
            "log_problems": problem_lines(log),
            "first_sync_secrets": secrets_at,
            "first_sync_statuses": statuses_at,
        }


def render(result: Mapping[str, Any]) -> str:
    writes = result["secret_writes"]
    per_write = result["requests"] / writes if writes else float("inf")
    gets_per_write = result["secret_gets"] / writes if writes else float("inf")
    per_lifetime = result["credentials"] * WINDOW_LIFETIMES
    lines = [
        f"API traffic: {result['credentials']} SimacanCredentials in {result['namespaces']} namespace(s), "
        f"one login, token lifetime {result['lifetime']:.0f}s, window {result['window']:.0f}s; "
        f"operator at {result['revision']}, {result['date']}",
        "",
        f"{'verb':<7} {'resource':<28} {'code':>4} {'requests':>9} {'per write':>10} "
        f"{'per cred/lifetime':>18}",
    ]
    for key, n in result["counts"].items():
        verb, resource, code = key.split(" ")
        lines.append(
            f"{verb:<7} {resource:<28} {code:>4} {n:>9} {n / writes if writes else 0:>10.2f} "
            f"{n / per_lifetime:>18.2f}"
        )
    lines += [
        "",
        f"Secret writes (2xx POST/PUT/PATCH): {writes} "
        f"({writes / per_lifetime:.2f} per credential per lifetime); "
        f"Auth API calls in the window: {result['auth_calls']}",
        f"requests per Secret write: {per_write:.2f} (target <= {MAX_REQUESTS_PER_WRITE})",
        f"Secret GETs per write: {gets_per_write:.2f} (target <= {MAX_SECRET_GETS_PER_WRITE})",
    ]
    problems = ", ".join(f"{n} {level}" for level, n in sorted(result["log_problems"].items())) or "none"
    lines.append(f"operator log WARNING/ERROR lines: {problems}")
    return "\n".join(lines)


def passed(result: Mapping[str, Any]) -> bool:
    writes = result["secret_writes"]
    return bool(
        writes
        and result["requests"] / writes <= MAX_REQUESTS_PER_WRITE
        and result["secret_gets"] / writes <= MAX_SECRET_GETS_PER_WRITE
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser("benchmarks.api_traffic", __doc__)
    parser.add_argument(
        "--credentials", "-n", type=int, default=None, help="SimacanCredentials (200; 2000 with --large)"
    )
    parser.add_argument(
        "--lifetime", type=float, default=None, help="token lifetime in s (30; 60 with --large)"
    )
    parser.add_argument("--large", action="store_true", help="N = 2,000 with 60 s tokens")
    parser.add_argument("--layout", choices=["one-namespace", "namespaces"], default="one-namespace")
    parser.add_argument(
        "--timeout", type=float, default=None, help="deadline for all Secrets (120 + 0.1 s per credential)"
    )
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter for the operator (default: this one)"
    )
    parser.add_argument("--first-sync", action="store_true", help="stop after the first-sync figures")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--work-dir", type=Path, help="keep control-plane data and logs here")
    options = parser.parse_args(argv)
    if options.credentials is None:
        options.credentials = 2000 if options.large else 200
    if options.lifetime is None:
        options.lifetime = 60.0 if options.large else 30.0
    if options.timeout is None:
        options.timeout = 120.0 + 0.1 * options.credentials
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)

    def body(work_dir: Path) -> int:
        result = measure(options, work_dir)
        if options.json is not None:
            options.json.write_text(json.dumps(result, indent=2) + "\n")
        if options.first_sync:
            return 0
        print()
        print(render(result))
        if options.layout == "namespaces":
            return 0
        ok = passed(result)
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1

    return run_guarded(body, options.work_dir, "api-traffic-")


if __name__ == "__main__":
    raise SystemExit(main())
