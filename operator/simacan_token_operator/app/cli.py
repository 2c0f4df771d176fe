"""The command line. `run` builds the pieces and runs them as one OperatorProcess (app/process.py);
`status` shows the credentials (app/statusview.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kubernetes import client, config

from simacan_token_operator import __version__
from simacan_token_operator.app import logs, statusview
from simacan_token_operator.app.metrics import Metrics
from simacan_token_operator.app.process import OperatorProcess
from simacan_token_operator.auth.client import AuthAPI, http_client
from simacan_token_operator.auth.pool import TokenPool
from simacan_token_operator.controller.gates import KubeGates
from simacan_token_operator.controller.routing import Controller
from simacan_token_operator.controller.runtime import Runtime
from simacan_token_operator.kube.api import AUTH_REFRESH_SECONDS, refreshing_at_most_every
from simacan_token_operator.kube.budget import DEFAULT_BURST, DEFAULT_QPS, RequestBudget
from simacan_token_operator.kube.client import Kube
from simacan_token_operator.kube.deadlines import keepalive_socket_options
from simacan_token_operator.kube.leader import LeaderElector
from simacan_token_operator.kube.metered import MeteredApiClient, RequestObserver
from simacan_token_operator.model.clusterspec import DEFAULT_CREDENTIALS_NAMESPACE
from simacan_token_operator.model.spec import DEFAULT_ALLOWED_HOSTS, AuthURLPolicy

logger = logging.getLogger("simacan_token_operator")
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="simacan-token-operator",
        description="Keep a valid Simacan bearer token in a Kubernetes Secret for every SimacanCredential.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="run the operator against the current kubeconfig or in-cluster config"
    )
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable)",
    )
    scope.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        help="watch every namespace (the default when no --namespace is given)",
    )
    run.add_argument(
        "--allowed-auth-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="host (port 443 only) or host:port that spec.authURL may name (repeatable; default: "
        f"the production and staging Simacan auth hosts: {', '.join(DEFAULT_ALLOWED_HOSTS)})",
    )
    run.add_argument(
        "--auth-ca-file",
        action="append",
        default=[],
        metavar="PATH",
        help="extra CA bundle (PEM) to trust for the Auth API, added to the public roots (repeatable)",
    )
    run.add_argument("--metrics-port", type=int, default=8080, help="port for /metrics (default 8080)")
    run.add_argument(
        "--health-port", type=int, default=8081, help="port for /healthz and /readyz (default 8081)"
    )
    run.add_argument(
        "--bind-address",
        default="0.0.0.0",  # noqa: S104 - probes and scrapes come from outside the pod
        help="address the HTTP endpoints listen on (default 0.0.0.0)",
    )
    run.add_argument(
        "--leader-election-namespace",
        metavar="NS",
        help="run as one of several replicas: only the holder of a Lease in NS works",
    )
    run.add_argument(
        "--leader-election-id",
        default="simacan-token-operator",
        metavar="NAME",
        help="name of that Lease; give each shard of a sharded install its own",
    )
    _add_budget_flags(run)
    _cluster_and_log_arguments(run)
    _add_status_command(commands)
    return parser.parse_args(argv)


def _add_status_command(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="show Ready, expiry, next refresh and recent Events of SimacanCredentials and "
        "ClusterSimacanCredentials; exit 1 if any shown is not Ready, 2 if they cannot be read",
    )
    status_scope = status.add_mutually_exclusive_group()
    status_scope.add_argument(
        "--namespace",
        "-n",
        metavar="NS",
        help="the SimacanCredentials of NS and the ClusterSimacanCredentials that serve it "
        "(default: the kubeconfig context's namespace)",
    )
    status_scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="every credential of both kinds"
    )
    status_scope.add_argument("--cluster", metavar="NAME", help="one ClusterSimacanCredential")
    status.add_argument("name", nargs="?", metavar="NAME", help="one SimacanCredential (default: all)")


def _add_budget_flags(run: argparse.ArgumentParser) -> None:
    """The request budget (kube/budget.py says why these defaults)."""
    run.add_argument(
        "--kube-api-qps",
        type=_non_negative,
        default=DEFAULT_QPS,
        metavar="QPS",
        help="Kubernetes API requests per second once the burst is spent (default "
        f"{DEFAULT_QPS:g}; 0 turns the client-side limit off and leaves it to API Priority and Fairness)",
    )
    run.add_argument(
        "--kube-api-burst",
        type=_positive_int,
        default=DEFAULT_BURST,
        metavar="N",
        help=f"Kubernetes API requests that may go at once, before the QPS applies (default {DEFAULT_BURST})",
    )


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of requests per second, 0 or more")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least 1")
    return value


def _cluster_and_log_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--cluster-credentials-namespace",
        metavar="NS",
        help="the only namespace whose Secrets ClusterSimacanCredentials may name as "
        "credentialsSecretRef (default: $POD_NAMESPACE, else the ServiceAccount's namespace, else "
        f"{DEFAULT_CREDENTIALS_NAMESPACE})",
    )
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def cluster_credentials_namespace(
    flag: str | None,
    environ: Mapping[str, str],
    namespace_file: Path = SERVICE_ACCOUNT_NAMESPACE_FILE,
) -> str:
    """The flag, else $POD_NAMESPACE (the Deployment sets it), else the namespace of the pod's
    ServiceAccount, else the install's own namespace. ValueError for a name no namespace can have."""
    chosen = flag or environ.get("POD_NAMESPACE", "").strip()
    if not chosen:
        try:
            chosen = namespace_file.read_text().strip()
        except OSError:  # not in a pod, or no token mounted
            chosen = ""
    chosen = chosen or DEFAULT_CREDENTIALS_NAMESPACE
    if not _NAMESPACE_NAME.fullmatch(chosen):
        raise ValueError(f"cluster credentials namespace {chosen[:80]!r} is not a valid namespace name")
    return chosen


def load_kube_config(observe: RequestObserver | None = None) -> client.ApiClient:
    """In a pod, use the ServiceAccount; elsewhere, the current kubeconfig context (as kubectl does).

    With `observe`, every request the client sends is reported to it (kube/metered.py)."""
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    # Room for the watches and the status command's reads (the operator's calls use transport.py).
    configuration.connection_pool_maxsize = 32
    configuration.socket_options = keepalive_socket_options()  # a dead peer is dropped in ~25 s
    # No silent retries: a resent write could land after its deadline (deadlines.py); callers
    # retry with their own backoff, and a failed call shows up as one.
    configuration.retries = False
    if configuration.refresh_api_key_hook is not None:
        configuration.refresh_api_key_hook = refreshing_at_most_every(
            AUTH_REFRESH_SECONDS, configuration.refresh_api_key_hook
        )
    if observe is None:
        return client.ApiClient(configuration)
    return MeteredApiClient(configuration, observe)


async def run_operator(options: argparse.Namespace) -> int:
    """Run until SIGTERM (exit 0) or until leadership is lost (exit 1, so the pod restarts clean)."""
    policy = _auth_policy(options.allowed_auth_host)
    credentials_namespace: str = options.cluster_credentials_namespace  # resolved by main()
    metrics = Metrics()
    api_client = load_kube_config(metrics.count_kube_request)
    elector = _elector(options, api_client, metrics)
    budget = RequestBudget(options.kube_api_qps, options.kube_api_burst) if options.kube_api_qps else None
    gates = KubeGates()
    # a replica that is not the leader writes nothing; the Lease takes nothing from the budget
    kube = Kube(api_client, fence=elector, budget=budget)
    async with http_client(options.auth_ca_file) as http, contextlib.aclosing(kube):
        api = AuthAPI(http, metrics.observe_request)
        runtime = Runtime(
            kube=kube,
            pool=TokenPool(api, write_rate=gates.write_rate, on_advanced=metrics.count_refresh_advanced),
            auth_policy=policy,
            metrics=metrics,
            cluster_credentials_namespace=credentials_namespace,
            gates=gates,
        )
        controller = Controller(runtime)
        cluster = not options.namespace  # ClusterSimacanCredentials need every namespace in view
        process = OperatorProcess(options, api_client, metrics, elector, controller, cluster, kube)
        process.stop_on_signals()
        await process.serve_endpoints()
        _log_start(options, policy, cluster, credentials_namespace)
        try:
            return await process.work()
        finally:
            await process.shut_down()


def _auth_policy(allowed_auth_hosts: Sequence[str]) -> AuthURLPolicy:
    return AuthURLPolicy(
        allowed_hosts=frozenset(h.lower() for h in allowed_auth_hosts) or AuthURLPolicy().allowed_hosts,
    )


def _elector(
    options: argparse.Namespace, api_client: client.ApiClient, metrics: Metrics
) -> LeaderElector | None:
    if not options.leader_election_namespace:
        return None
    return LeaderElector(
        api_client,
        options.leader_election_namespace,
        options.leader_election_id,
        _identity(),
        on_leading=lambda leading: metrics.leader.set(1 if leading else 0),
    )


def _log_start(
    options: argparse.Namespace, policy: AuthURLPolicy, serves_cluster_kind: bool, credentials_namespace: str
) -> None:
    scope = f"namespaces {', '.join(options.namespace)}" if options.namespace else "all namespaces"
    logger.info(
        "simacan-token-operator %s for %s; auth hosts allowed: %s",
        __version__,
        scope,
        ", ".join(sorted(policy.allowed_hosts)),
    )
    if not serves_cluster_kind:
        logger.info(
            "ClusterSimacanCredentials are ignored: only an operator watching all namespaces serves them"
        )
    else:
        logger.info(
            "ClusterSimacanCredentials read credentials Secrets only in namespace %s", credentials_namespace
        )


def _identity() -> str:
    """POD_NAME in a pod; elsewhere host name and PID, unique enough among replicas."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if options.command == "status":
        return statusview.command(
            load_kube_config,
            options.namespace,
            options.all_namespaces,
            options.name,
            cluster=options.cluster,
        )
    logs.configure(options.log_level)
    try:
        options.cluster_credentials_namespace = cluster_credentials_namespace(
            options.cluster_credentials_namespace, os.environ
        )
    except ValueError as error:
        logger.error("%s", error)  # a bad flag or environment, not a bug: no traceback
        return 2
    _freeze_start_up_objects()
    return asyncio.run(run_operator(options))


def _freeze_start_up_objects() -> None:
    """Keep the objects of start-up (every imported module, class and function) out of the
    garbage collector's scans: they live as long as the process. A full collection walks every
    tracked object, and those of kopf, kubernetes, aiohttp and httpx are most of them; in a first
    sync of 2,000 credentials the collector took 0.6 s of the 5 s in which the Secrets were
    written. Frozen after a collection, so no start-up garbage is kept for good. The operator's
    CPU per Secret written in that sync fell from 2.6 to 1.9 ms (`benchmarks.api_traffic --large
    --first-sync`, operator CPU from /proc between the 10th and 90th percentile of the writes)."""
    gc.collect()
    gc.freeze()
