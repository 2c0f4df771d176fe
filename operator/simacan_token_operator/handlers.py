"""kopf wiring: thin adapters that turn watch events into Controller calls."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from .controller import Controller
from .spec import GROUP, PLURAL, VERSION


def build_registry(controller: Controller, stop: asyncio.Event) -> kopf.OperatorRegistry:
    """Only watching handlers: kopf stores no progress annotations and adds no finalizers."""
    registry = kopf.OperatorRegistry()

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def credential_event(event: kopf.RawEvent, namespace: str | None, name: str, **_: Any) -> None:
        if namespace is None:
            return  # SimacanCredential is namespaced; a cluster-scoped event cannot be ours
        if event["type"] == "DELETED":
            await controller.forget(namespace, name)
        else:
            await controller.observe(event["object"])

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """A private registry gets none of kopf's default login handlers: in a pod use the
        ServiceAccount, elsewhere the kubeconfig, like the kubernetes client does."""
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def stop_workers(**_: Any) -> None:
        await controller.stop()
        # kopf handles SIGTERM itself; without this its waiter on our stop flag counts as a
        # hung task and delays the exit (and a standby's takeover) by five seconds.
        stop.set()

    return registry


def operator_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # We post our own Events, each worded for the user; kopf's would echo handler errors.
    settings.posting.enabled = False
    # The namespaces come from flags and the CRD is installed before the operator starts, so
    # kopf needs no cluster-wide list/watch of namespaces and CRDs: least privilege.
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    return settings
