"""One operator process: its parts, and the steps of its life from serving probes to handing over.

`cli.run_operator` builds the parts and runs the steps in order: serve the probe and metrics
endpoints, work (win the Lease if there is one, start the watches, run kopf), and on every way
out shut down, handing the Lease over first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import kopf
from aiohttp import web
from kubernetes import client

from simacan_token_operator.app.handlers import build_registry, operator_settings
from simacan_token_operator.app.health import build_app, serve
from simacan_token_operator.app.metrics import Metrics
from simacan_token_operator.controller.routing import Controller
from simacan_token_operator.controller.startgate import NameLister, credential_scopes, hold_until_arrived
from simacan_token_operator.kube.leader import LeaderElector
from simacan_token_operator.kube.namespacewatch import namespace_watch
from simacan_token_operator.kube.secretwatch import secret_watch
from simacan_token_operator.kube.watch import MetadataWatch


@dataclass(eq=False)
class OperatorProcess:
    """The parts of one running operator, and what it has started so far (to stop on the way out)."""

    options: argparse.Namespace
    api_client: client.ApiClient
    metrics: Metrics
    elector: LeaderElector | None
    controller: Controller
    cluster: bool
    """Whether ClusterSimacanCredentials are served (only when watching all namespaces)."""
    lister: NameLister
    """Lists the credentials when the process begins to work (startgate.py)."""
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    kopf_ready: asyncio.Event = field(default_factory=asyncio.Event)
    leading: bool = False
    holding: asyncio.Task[None] | None = None
    """Renews the Lease; stops the process when it returns (leadership lost or released)."""
    handing_over: asyncio.Task[None] | None = None
    start_hold: asyncio.Task[None] | None = None
    secrets: MetadataWatch | None = None
    namespaces: MetadataWatch | None = None
    runners: list[web.AppRunner] = field(default_factory=list)

    def stop_on_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop.set)

    def ready(self) -> bool:
        """A healthy standby is ready too: it keeps the Deployment's rollout moving."""
        return self.kopf_ready.is_set() or (
            self.elector is not None and self.elector.connected.is_set() and not self.leading
        )

    async def serve_endpoints(self) -> None:
        """/healthz and /readyz on the health port, /metrics on the metrics port (the same app)."""
        app = build_app(self.controller, self.metrics, self.ready)
        self.runners.append(await serve(app, self.options.bind_address, self.options.health_port))
        if self.options.metrics_port != self.options.health_port:
            self.runners.append(await serve(app, self.options.bind_address, self.options.metrics_port))

    async def work(self) -> int:
        """Lead (or be the only replica), watch, and run kopf until stopped; the exit code."""
        if self.elector is not None:
            if not await self._lead(self.elector):
                return 0
        else:
            self.metrics.leader.set(1)
        self._start_watches()
        self.start_hold = hold_until_arrived(
            self.controller.runtime.start_gate,
            self.lister,
            credential_scopes(self.options.namespace, self.cluster),
            self.controller.workers,
        )
        await kopf.operator(
            registry=build_registry(self.controller, self.stop, self.cluster),
            settings=operator_settings(),
            standalone=True,
            clusterwide=not self.options.namespace,
            namespaces=self.options.namespace,
            ready_flag=self.kopf_ready,
            stop_flag=self.stop,
        )
        return 1 if self.elector is not None and self.elector.lost else 0

    async def _lead(self, elector: LeaderElector) -> bool:
        """Wait for the Lease; False if the process was stopped first."""
        if not await _first_of(elector.acquire(), self.stop.wait()):
            return False
        self.leading = True
        self.holding = asyncio.create_task(elector.hold())
        self.holding.add_done_callback(lambda _: self.stop.set())
        # On SIGTERM hand over at once: the fence refuses writes from then on, and
        # kopf's own shutdown takes seconds longer.
        self.handing_over = asyncio.create_task(_release_when_stopped(elector, self.stop))
        return True

    def _start_watches(self) -> None:
        self.secrets = secret_watch(
            self.api_client,
            self.options.namespace,
            self.controller.secret_changed,
            self.controller.secrets_listed,
        )
        self.secrets.start()
        if self.cluster:
            self.namespaces = namespace_watch(
                self.api_client, self.controller.namespaces_listed, self.controller.namespace_changed
            )
            self.namespaces.start()

    async def shut_down(self) -> None:
        """Hand over, then stop what was started, whichever way the process is leaving."""
        if self.handing_over is not None:
            # Every way out (SIGTERM, a lost Lease, kopf failing) hands over through this one
            # task, awaited to its end (release() bounds its own waits): cancelled, an idle
            # operator whose kopf stops in a blink exits holding the Lease, and the standby
            # waits out its whole duration.
            self.stop.set()
            await self.handing_over
        if self.start_hold is not None:
            self.start_hold.cancel()
        if self.secrets is not None:
            await self.secrets.stop()
        if self.namespaces is not None:
            await self.namespaces.stop()
        await self.controller.stop()
        for runner in self.runners:
            await runner.cleanup()
        with contextlib.suppress(Exception):
            self.api_client.close()  # type: ignore[no-untyped-call]


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
