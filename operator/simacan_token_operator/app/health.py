"""HTTP endpoints for kubelet and Prometheus: /healthz, /readyz and /metrics."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from simacan_token_operator.app.metrics import Metrics
from simacan_token_operator.controller.routing import Controller

OVERDUE_MARGIN_SECONDS = 120.0
"""A refresh this late means the operator is stuck: a restart is the cure kubelet can give."""


def build_app(
    controller: Controller,
    metrics: Metrics,
    ready: Callable[[], bool],
    clock: Callable[[], float] = time.time,
) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        overdue = controller.overdue(clock(), OVERDUE_MARGIN_SECONDS)
        if overdue:
            sample = ", ".join(sorted(overdue)[:5])
            return web.Response(status=500, text=f"{len(overdue)} credential(s) overdue: {sample}\n")
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if not ready():
            return web.Response(status=503, text="not connected yet\n")
        return web.Response(text="ok\n")

    async def serve_metrics(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", serve_metrics)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
