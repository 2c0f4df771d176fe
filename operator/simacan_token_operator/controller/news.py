"""A credential's Events: posted now, or held back in a wave; good news within a namespace's budget.

In a wave (a first sync, a password change) a round's Normal Events (`Issued`, `Recovered`,
`PasswordChanged`) go out after its status (reporting.Reporter.report), so that the Events do
not hold the statuses back. Waiting for a slot inside the round kept the round alive, with its
frames and rendered status, until every status of the wave was written: at 10,000 credentials,
all of them at once. A held Event is its object reference and its note, and one task per
namespace posts them in order.

Normal Events are good news the status says as well, and each is a write to the API server that
a tenant's objects ask for: 2,000 credentials in one namespace made 2,000 `Issued` Events in
their first sync, a request per credential beyond the two per refresh that the API server should
see. So a namespace may post EVENT_BURST of them at once and then one every EVENT_INTERVAL
seconds; the rest are not posted, and a log line says how many. Warnings are never held back or
dropped: each tells of a problem to act on, and a credential says each once per change.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from simacan_token_operator.controller.gates import NEWS, KubeGates
from simacan_token_operator.kube.budget import RequestBudget
from simacan_token_operator.kube.client import KubeError, ObjectRef
from simacan_token_operator.reconcile.report import Note

logger = logging.getLogger(__name__)

EVENT_BURST = 50
"""Normal Events a namespace may post at once: every one of a few dozen credentials applied
together still gets its `Issued` Event."""
EVENT_INTERVAL = 10.0
"""Then one Normal Event per namespace every this many seconds."""
BUDGETS_KEPT = 1024
"""Past this many namespaces with a budget in use, those whose budget is full again are forgotten."""


class EventPoster(Protocol):
    """What News needs of the Kubernetes seam."""

    async def post_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None: ...


class NormalEventBudget:
    """EVENT_BURST Normal Events per namespace at once, then one every EVENT_INTERVAL seconds:
    a request budget (kube/budget.py) per namespace, taken from without waiting."""

    def __init__(
        self, clock: Callable[[], float], burst: int = EVENT_BURST, interval: float = EVENT_INTERVAL
    ) -> None:
        self._clock, self._burst, self._interval = clock, burst, interval
        self._budgets: dict[str | None, RequestBudget] = {}
        self._dropped: dict[str | None, int] = {}
        """Namespaces whose Normal Events are being dropped, and how many so far."""

    def allow(self, namespace: str | None) -> bool:
        budget = self._budgets.get(namespace)
        if budget is None:
            budget = self._budgets[namespace] = RequestBudget(1.0 / self._interval, self._burst, self._clock)
        if not budget.try_take():
            dropped = self._dropped.get(namespace, 0)
            if not dropped:
                logger.info(
                    "namespace %s: more than %d Normal Events at once; the rest are not posted, "
                    "one every %.0f s is (the statuses say the same)",
                    namespace or "(cluster)",
                    self._burst,
                    self._interval,
                )
            self._dropped[namespace] = dropped + 1
            return False
        dropped = self._dropped.pop(namespace, 0)
        if dropped:
            logger.info("namespace %s: %d Normal Events were not posted", namespace or "(cluster)", dropped)
        if len(self._budgets) > BUDGETS_KEPT:
            self._budgets = {ns: kept for ns, kept in self._budgets.items() if not kept.full()}
        return True


async def post(
    kube: EventPoster, gates: KubeGates, ref: ObjectRef, note: Note, who: str, priority: int
) -> None:
    """Post one Event in its turn at `priority`. A failure is logged, not raised: an Event is
    worth one try, and the status says the same."""
    try:
        async with gates.slot(ref.namespace or None, priority):
            await kube.post_event(ref, note.type, note.reason, note.message)
    except KubeError as error:
        logger.warning("%s: could not post Event %s: %s", who, note.reason, error)


class News:
    def __init__(self, kube: EventPoster, gates: KubeGates, clock: Callable[[], float]) -> None:
        self._kube, self._gates = kube, gates
        self._budget = NormalEventBudget(clock)
        self._queues: dict[str | None, deque[tuple[ObjectRef, Note, str]]] = {}
        self._posters: dict[str | None, asyncio.Task[None]] = {}

    def _admit(self, ref: ObjectRef, note: Note) -> bool:
        return note.type != "Normal" or self._budget.allow(ref.namespace or None)

    async def post(self, ref: ObjectRef, note: Note, who: str, priority: int) -> None:
        """Post `note` about `ref` now (in its turn at `priority`), if its namespace's budget allows."""
        if self._admit(ref, note):
            await post(self._kube, self._gates, ref, note, who, priority)

    def hold(self, ref: ObjectRef, note: Note, who: str) -> None:
        """Post `note` about `ref` once the statuses and passes waiting for the same slots are
        through, if its namespace's budget allows: checked now, so a dropped one is not kept."""
        if not self._admit(ref, note):
            return
        namespace = ref.namespace or None
        queue = self._queues.get(namespace)
        if queue is None:
            queue = self._queues[namespace] = deque()
            self._posters[namespace] = asyncio.create_task(
                self._post(namespace, queue), context=contextvars.Context()
            )
        queue.append((ref, note, who))

    async def _post(self, namespace: str | None, queue: deque[tuple[ObjectRef, Note, str]]) -> None:
        try:
            while queue:
                ref, note, who = queue.popleft()
                await post(self._kube, self._gates, ref, note, who, NEWS)
        finally:
            del self._queues[namespace], self._posters[namespace]

    async def drained(self) -> None:
        """Until every held Event is posted (or given up)."""
        while self._posters:
            await asyncio.gather(*self._posters.values(), return_exceptions=True)

    async def stop(self) -> None:
        """Drop what is held: a stopping operator (or one that lost the Lease) posts nothing more."""
        posters = list(self._posters.values())
        for poster in posters:
            poster.cancel()
        await asyncio.gather(*posters, return_exceptions=True)
