"""Workers begin once kopf has handed over every credential that existed when the operator began
to work, as controller-runtime starts its workers once the informers' caches have synced.

kopf lists each watched scope, then hands each listed credential to the operator's handler, in a
task of its own. Workers that began as their credentials arrived shared the process with kopf's
handling of the rest of the list: in a first sync of 2,000 credentials the token Secrets were
written at about 600 a second, 1.2 ms of the operator's CPU each, while kopf was still at it.
Begun once the last had arrived, the same writes ran at 730 to 920 a second, 0.6 to 0.8 ms each,
and the last Secret landed no later (`python -m benchmarks.api_traffic --large --first-sync`,
2026-12-07, docs/benchmarks.md).

So when the operator begins to work (at start, or on winning the Lease) it lists the credentials
itself, names only and in pages, and holds the workers until each listed credential has arrived
through kopf or has been deleted. A credential deleted between the two lists never arrives, and a
list can fail: after HOLD_LIMIT seconds, or at once when the list fails, the workers begin anyway,
each as its credential arrives. Credentials created meanwhile wait with the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Container, Sequence
from dataclasses import dataclass
from typing import Protocol

from simacan_token_operator.kube.client import KubeError, NamePage
from simacan_token_operator.model.clusterspec import CLUSTER_KIND, CLUSTER_PLURAL
from simacan_token_operator.model.spec import KIND, PLURAL

logger = logging.getLogger(__name__)

HOLD_LIMIT = 10.0
"""Seconds the workers wait at most. kopf handed over 2,000 credentials in 0.7-1.3 s and 10,000
in 6.6 s (benchmarks.compare, 2026-12-07); beyond the limit the workers begin as they used to,
each as its credential arrives."""
LIST_PAGE = 100
"""Credentials per page of the list. A page's bytes are held while it is decoded, and a tenant may
annotate its credentials (256 KiB each): 100 bound that to about 25 MiB."""

Key = tuple[str, str, str]
"""(kind, namespace, name), as routing.WorkerKey; the namespace is empty for a cluster-scoped kind."""


class StartGate:
    """Open, except while held: workers wait for it before each round (a no-op once open)."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._missing: set[Key] | None = None
        """The listed credentials that have not arrived yet; None before the list is in."""

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def wait(self) -> None:
        if not self._open.is_set():
            await self._open.wait()

    def hold(self) -> None:
        self._open.clear()
        self._missing = None

    def expect(self, listed: Collection[Key], arrived: Container[Key]) -> int:
        """The credentials the list found; how many of them have yet to arrive (0 opens the gate)."""
        if self._open.is_set():
            return 0
        self._missing = {key for key in listed if key not in arrived}
        waiting = len(self._missing)
        if not waiting:
            self.release()
        return waiting

    def arrived(self, key: Key) -> None:
        """kopf handed this credential over, or reported it deleted."""
        missing = self._missing
        if missing is not None:
            missing.discard(key)
            if not missing:
                self.release()

    def release(self) -> None:
        self._missing = None
        self._open.set()


@dataclass(frozen=True)
class ListScope:
    kind: str
    plural: str
    namespace: str | None
    """None: all namespaces, or a cluster-scoped kind."""


def credential_scopes(namespaces: Sequence[str], cluster: bool) -> list[ListScope]:
    """What kopf watches: SimacanCredentials in each namespace (all when none is named), and
    ClusterSimacanCredentials when the cluster kind is served."""
    where: Sequence[str | None] = namespaces or [None]
    scopes = [ListScope(KIND, PLURAL, namespace) for namespace in where]
    if cluster:
        scopes.append(ListScope(CLUSTER_KIND, CLUSTER_PLURAL, None))
    return scopes


class NameLister(Protocol):
    async def list_names(
        self, plural: str, namespace: str | None, limit: int, continue_token: str | None
    ) -> NamePage: ...


async def listed_keys(lister: NameLister, scopes: Sequence[ListScope]) -> set[Key]:
    keys: set[Key] = set()
    for scope in scopes:
        token: str | None = None
        while True:
            page = await lister.list_names(scope.plural, scope.namespace, LIST_PAGE, token)
            keys.update((scope.kind, namespace, name) for namespace, name in page.names)
            token = page.continue_token
            if token is None:
                break
    return keys


def hold_until_arrived(
    gate: StartGate,
    lister: NameLister,
    scopes: Sequence[ListScope],
    arrived: Container[Key],
    limit: float = HOLD_LIMIT,
) -> asyncio.Task[None]:
    """Hold the workers from now on; the task returned lets them begin once every credential
    listed has arrived (`arrived` holds the keys of those that have), `limit` seconds at most.
    Cancelled, it leaves the gate as it is: the workers are being stopped."""
    gate.hold()
    return asyncio.create_task(_open_when_arrived(gate, lister, scopes, arrived, limit), name="start-gate")


async def _open_when_arrived(
    gate: StartGate, lister: NameLister, scopes: Sequence[ListScope], arrived: Container[Key], limit: float
) -> None:
    began = time.monotonic()
    listed: set[Key] = set()
    try:
        async with asyncio.timeout(limit):
            listed = await listed_keys(lister, scopes)
            if gate.expect(listed, arrived):
                await gate.wait()
        logger.info(
            "all %d credentials listed at start arrived in %.1fs; their workers begin",
            len(listed),
            time.monotonic() - began,
        )
    except TimeoutError:
        logger.info(
            "%s after %.0fs; the workers begin anyway",
            f"{sum(key not in arrived for key in listed)} of {len(listed)} credentials listed at start "
            "had not arrived (deleted meanwhile?)"
            if listed
            else "the credentials were not listed",
            limit,
        )
    except KubeError as error:
        logger.warning("%s; the workers begin as their credentials arrive", error)
    gate.release()
