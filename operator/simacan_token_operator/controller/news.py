"""Normal Events held back in a wave, posted after every status waiting, one namespace at a time.

In a wave (a first sync, a password change) a round's good news (`Issued`, `Recovered`,
`PasswordChanged`) goes out after its status (reporting.Reporter.report), so that the Events do
not hold the statuses back. Waiting for a slot inside the round kept the round alive, with its
frames and rendered status, until every status of the wave was written: at 10,000 credentials,
all of them at once. A held Event is its object reference and its note, and one task per
namespace posts them in order.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from typing import Protocol

from simacan_token_operator.controller.gates import NEWS, KubeGates
from simacan_token_operator.kube.client import KubeError, ObjectRef
from simacan_token_operator.reconcile.report import Note

logger = logging.getLogger(__name__)


class EventPoster(Protocol):
    """What HeldNews needs of the Kubernetes seam."""

    async def post_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None: ...


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


class HeldNews:
    def __init__(self, kube: EventPoster, gates: KubeGates) -> None:
        self._kube, self._gates = kube, gates
        self._queues: dict[str | None, deque[tuple[ObjectRef, Note, str]]] = {}
        self._posters: dict[str | None, asyncio.Task[None]] = {}

    def hold(self, ref: ObjectRef, note: Note, who: str) -> None:
        """Post `note` about `ref` once the statuses and passes waiting for the same slots are through."""
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
