"""Probes: liveness fails when a refresh is long overdue (a stuck operator), readiness when not connected."""

from __future__ import annotations

from typing import Any

import httpx
from aiohttp.test_utils import TestServer

from simacan_token_operator.app.health import OVERDUE_MARGIN_SECONDS, build_app
from simacan_token_operator.app.metrics import Metrics
from simacan_token_operator.controller.routing import Controller
from simacan_token_operator.controller.worker import CredentialWorker, Runtime

NOW = 1_800_000_000.0


def controller_with_due_times(*due: float | None) -> Controller:
    runtime: Any = Runtime(kube=None, pool=None, auth_policy=None, metrics=Metrics(), clock=lambda: NOW)  # type: ignore[arg-type]
    controller = Controller(runtime)
    for i, due_at in enumerate(due):
        body = {"metadata": {"name": f"c{i}", "namespace": "ns", "uid": f"u{i}"}}
        worker = CredentialWorker(body, runtime)
        worker.due_at = due_at
        controller.workers[("ns", f"c{i}")] = worker
    return controller


async def get(controller: Controller, path: str, ready: bool = True) -> httpx.Response:
    app = build_app(controller, Metrics(), lambda: ready, clock=lambda: NOW)
    async with TestServer(app, host="127.0.0.1") as server, httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{server.port}{path}")


async def test_liveness_passes_while_every_refresh_is_on_time() -> None:
    controller = controller_with_due_times(NOW + 600, NOW - 5, None)
    assert (await get(controller, "/healthz")).status_code == 200


async def test_liveness_fails_when_a_refresh_is_long_overdue() -> None:
    controller = controller_with_due_times(NOW + 600, NOW - OVERDUE_MARGIN_SECONDS - 1)
    response = await get(controller, "/healthz")
    assert response.status_code == 500
    assert "ns/c1" in response.text


async def test_readiness_follows_the_connection_state() -> None:
    controller = controller_with_due_times()
    assert (await get(controller, "/readyz", ready=True)).status_code == 200
    assert (await get(controller, "/readyz", ready=False)).status_code == 503
