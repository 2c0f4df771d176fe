"""`simacan-token-operator run`: wires the pieces together and runs kopf."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from kubernetes import client, config

from simacan_token_operator import __version__
from simacan_token_operator.app import logs, statusview
from simacan_token_operator.app.handlers import build_registry, operator_settings
from simacan_token_operator.app.health import build_app, serve
from simacan_token_operator.app.metrics import Metrics
from simacan_token_operator.auth.client import AuthAPI, http_client
from simacan_token_operator.auth.pool import TokenPool
from simacan_token_operator.controller.clustercredential import ClusterController
from simacan_token_operator.controller.routing import Controller
from simacan_token_operator.controller.worker import KUBE_CONCURRENCY, Runtime
from simacan_token_operator.kube.client import Kube
from simacan_token_operator.kube.clusterkube import ClusterKube
from simacan_token_operator.kube.deadlines import keepalive_socket_options
from simacan_token_operator.kube.leader import LeaderElector
from simacan_token_operator.kube.namespacewatch import NamespaceWatch
from simacan_token_operator.kube.secretwatch import SecretWatch
from simacan_token_operator.model.spec import DEFAULT_ALLOWED_HOSTS, AuthURLPolicy

logger = logging.getLogger("simacan_token_operator")


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
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
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
    return parser.parse_args(argv)


def load_kube_config() -> client.ApiClient:
    """In a pod, use the ServiceAccount; elsewhere, the current kubeconfig context (as kubectl does)."""
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    # Room for the thread pool's calls and the Secret watch, so no connection is thrown away.
    configuration.connection_pool_maxsize = 32
    configuration.socket_options = keepalive_socket_options()  # a dead peer is dropped in ~25 s
    # No silent retries: a resent write could land after its deadline (deadlines.py); callers
    # retry with their own backoff, and a failed call shows up as one.
    configuration.retries = False
    return client.ApiClient(configuration)


async def run_operator(options: argparse.Namespace) -> int:
    """Run until SIGTERM (exit 0) or until leadership is lost (exit 1, so the pod restarts clean)."""
    policy = AuthURLPolicy(
        allowed_hosts=frozenset(h.lower() for h in options.allowed_auth_host)
        or AuthURLPolicy().allowed_hosts,
    )
    metrics = Metrics()
    # Every Kubernetes call runs in the default executor (the client is synchronous): a thread for
    # each slot of the Kubernetes gate, and a few more so that Lease renewals never queue behind
    # Secret writes (the default, cores + 4, is 6 threads on 2 cores).
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=KUBE_CONCURRENCY + 4, thread_name_prefix="kube")
    )
    api_client = load_kube_config()
    elector = (
        LeaderElector(
            api_client,
            options.leader_election_namespace,
            options.leader_election_id,
            _identity(),
            on_leading=lambda leading: metrics.leader.set(1 if leading else 0),
        )
        if options.leader_election_namespace
        else None
    )
    async with http_client(options.auth_ca_file) as http:
        runtime = Runtime(
            kube=Kube(api_client, fence=elector),  # a replica that is not the leader writes nothing
            pool=TokenPool(AuthAPI(http, metrics.observe_request)),
            auth_policy=policy,
            metrics=metrics,
        )
        controller = Controller(runtime)
        cluster: ClusterController | None = None
        if not options.namespace:  # ClusterSimacanCredentials need every namespace in view
            cluster = ClusterController(runtime, ClusterKube(api_client, fence=elector))
            controller.also_on_secret.append(cluster.secret_changed)
            controller.also_on_resync.append(cluster.resync)
            controller.also_overdue.append(cluster.overdue)
        namespaces: NamespaceWatch | None = None
        kopf_ready = asyncio.Event()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)

        def ready() -> bool:
            """A healthy standby is ready too: it keeps the Deployment's rollout moving."""
            return kopf_ready.is_set() or (elector is not None and elector.connected.is_set() and not leading)

        leading = False
        handing_over: asyncio.Task[None] | None = None
        secrets: SecretWatch | None = None
        app = build_app(controller, metrics, ready)
        runners = [await serve(app, options.bind_address, options.health_port)]
        if options.metrics_port != options.health_port:
            runners.append(await serve(app, options.bind_address, options.metrics_port))
        scope = f"namespaces {', '.join(options.namespace)}" if options.namespace else "all namespaces"
        logger.info(
            "simacan-token-operator %s for %s; auth hosts allowed: %s",
            __version__,
            scope,
            ", ".join(sorted(policy.allowed_hosts)),
        )
        if cluster is None:
            logger.info(
                "ClusterSimacanCredentials are ignored: only an operator watching all namespaces serves them"
            )
        try:
            if elector is not None:
                if not await _first_of(elector.acquire(), stop.wait()):
                    return 0
                leading = True
                lost = asyncio.create_task(elector.hold())
                lost.add_done_callback(lambda _: stop.set())
                # On SIGTERM hand over at once: the fence refuses writes from then on, and
                # kopf's own shutdown takes seconds longer.
                handing_over = asyncio.create_task(_release_when_stopped(elector, stop))
            else:
                metrics.leader.set(1)
            secrets = SecretWatch(api_client, options.namespace, controller.secret_changed, controller.resync)
            secrets.start()
            if cluster is not None:
                namespaces = NamespaceWatch(api_client, cluster.namespaces_listed, cluster.namespace_changed)
                namespaces.start()
            await kopf.operator(
                registry=build_registry(controller, stop, cluster),
                settings=operator_settings(),
                standalone=True,
                clusterwide=not options.namespace,
                namespaces=options.namespace,
                ready_flag=kopf_ready,
                stop_flag=stop,
            )
            return 1 if elector is not None and elector.lost else 0
        finally:
            if handing_over is not None:
                # Every way out (SIGTERM, a lost Lease, kopf failing) hands over through this one
                # task, awaited to its end (release() bounds its own waits): cancelled, an idle
                # operator whose kopf stops in a blink exits holding the Lease, and the standby
                # waits out its whole duration.
                stop.set()
                await handing_over
            if secrets is not None:
                await secrets.stop()
            if namespaces is not None:
                await namespaces.stop()
            if cluster is not None:
                await cluster.stop()
            await controller.stop()
            for runner in runners:
                await runner.cleanup()
            with contextlib.suppress(Exception):
                api_client.close()  # type: ignore[no-untyped-call]


async def _release_when_stopped(elector: LeaderElector, stop: asyncio.Event) -> None:
    await stop.wait()
    await elector.release()


async def _first_of(wanted: Coroutine[Any, Any, None], other: Coroutine[Any, Any, Any]) -> bool:
    """Run both; True if `wanted` finished first. The loser is cancelled."""
    first, second = asyncio.ensure_future(wanted), asyncio.ensure_future(other)
    done, _ = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
    for task in (first, second):
        task.cancel()
    return first in done


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
    return asyncio.run(run_operator(options))
