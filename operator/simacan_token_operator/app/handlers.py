"""kopf wiring: thin adapters that turn watch events into Controller calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import aiohttp
import kopf

from simacan_token_operator.controller.routing import Controller
from simacan_token_operator.kube.deadlines import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    WATCH_READ_TIMEOUT,
    WATCH_SERVER_TIMEOUT,
    keepalive_socket,
)
from simacan_token_operator.model.clusterspec import CLUSTER_KIND, CLUSTER_PLURAL
from simacan_token_operator.model.spec import GROUP, KIND, PLURAL, VERSION

RETRY_BACKOFFS = (0.5, 1.0, 1.0, *([2.0] * 28))
"""Seconds between kopf's retries of a failed request (about a minute in all, as kopf's default)."""
LIST_TIMEOUT = 60.0
"""kopf's short requests are lists of every credential at start: a total deadline, generous
enough for thousands of objects, far shorter than aiohttp's five minutes."""
OBJECT_WORKER_IDLE_SECONDS = 0.2
"""How long kopf keeps an object's worker task after its last event (kopf's default: 5 s).
An idle worker still holds that last event, the whole object as parsed. Our handlers only hand
the event on, so a worker is cheap to make again; kept for 5 s, a wave's 2,000 status patches
and their 2,000 watch events held about 30 MiB at once, which the process never gave back
(settled RSS 160 -> 128 MiB; `python -m benchmarks.footprint --credentials 2000`, 2026-12-06)."""
LIST_CHUNK = 500
"""Credentials per page of kopf's lists (kopf's default: all in one answer). At 10,000
credentials one answer is 7.5 MiB, held three times over as bytes and 32 MiB once parsed, while
the workers it starts make their long-lived objects between those: the process kept the peak.
A page at a time holds a twentieth of it."""


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff-base: kopf builds one for every event, a deep copy of the object to compare with
    the last handled one, for on.create/on.update/on.field handlers and daemons. The operator has
    only on.event handlers, which get every event and no diff: nothing would read it, and the
    copies cost about 5 % of the operator's CPU in a first sync of 2,000 or 10,000 credentials
    (py-spy, 2026-12-06). Nothing is stored on the objects either way."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def build_registry(
    controller: Controller, stop: asyncio.Event, cluster: bool = False
) -> kopf.OperatorRegistry:
    """Only watching handlers: kopf stores no progress annotations and adds no finalizers.

    `cluster` only when watching all namespaces: only then are ClusterSimacanCredentials served."""
    registry = kopf.OperatorRegistry()

    if cluster:

        @kopf.on.event(GROUP, VERSION, CLUSTER_PLURAL, registry=registry)
        async def cluster_credential_event(event: kopf.RawEvent, name: str, **_: Any) -> None:
            if event["type"] == "DELETED":
                await controller.forget(CLUSTER_KIND, "", name)
            else:
                await controller.observe(event["object"])

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def credential_event(event: kopf.RawEvent, namespace: str | None, name: str, **_: Any) -> None:
        if namespace is None:
            return  # SimacanCredential is namespaced; a cluster-scoped event cannot be ours
        if event["type"] == "DELETED":
            await controller.forget(KIND, namespace, name)
        else:
            await controller.observe(event["object"])

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
        """A private registry gets none of kopf's default login handlers. Log in through the
        kubernetes client's loader, as `cli.load_kube_config` does, so kopf and the client talk to
        the same address: in a pod, KUBERNETES_SERVICE_HOST; kopf's own service-account login
        would use the name kubernetes.default.svc, which needs cluster DNS."""
        info = kopf.login_via_client(**kwargs)
        return None if info is None else keepalive_session(info)

    @kopf.on.cleanup(registry=registry)
    async def stop_workers(**_: Any) -> None:
        await controller.stop()
        # kopf handles SIGTERM itself; without this its waiter on our stop flag counts as a
        # hung task and delays the exit (and a standby's takeover) by five seconds.
        stop.set()

    return registry


def keepalive_session(info: kopf.ConnectionInfo) -> kopf.AiohttpSession:
    """kopf's own session, but on sockets with TCP keepalive (deadlines.py): kopf offers no
    setting for it, and without it a watch on a dead connection waits for the kernel."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context(), socket_factory=keepalive_socket),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
    )


def operator_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # We post our own Events, each worded for the user; kopf's would echo handler errors.
    settings.posting.enabled = False
    # The namespaces come from flags and the CRD is installed before the operator starts, so
    # kopf needs no cluster-wide list/watch of namespaces and CRDs: least privilege.
    settings.scanning.disabled = True
    settings.queueing.idle_timeout = OBJECT_WORKER_IDLE_SECONDS
    settings.watching.chunk_size = LIST_CHUNK
    settings.persistence.diffbase_storage = NoDiffBase()
    # Deadlines (deadlines.py): the server ends each watch; the client gives it a little longer;
    # a watch silent for longer than the bookmark interval allows is dead and is reopened.
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_SERVER_TIMEOUT + 30
    settings.watching.connect_timeout = CONNECT_TIMEOUT
    settings.watching.inactivity_timeout = WATCH_READ_TIMEOUT
    settings.networking.connect_timeout = CONNECT_TIMEOUT
    settings.networking.request_timeout = max(LIST_TIMEOUT, CONNECT_TIMEOUT + READ_TIMEOUT)
    # kopf's default retries grow to 13 and 21 s; after an API server outage the watch would
    # wait that long before it lists again. The same minute of patience, in short steps.
    settings.networking.error_backoffs = RETRY_BACKOFFS
    return settings
