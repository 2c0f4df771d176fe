"""Telling the user what a round concluded: Events on the credential, its status, its metrics."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from simacan_token_operator.controller.gates import Slot
from simacan_token_operator.controller.kinds import Kind, Round
from simacan_token_operator.controller.runtime import Runtime
from simacan_token_operator.kube.client import KubeError
from simacan_token_operator.reconcile.report import Note

logger = logging.getLogger(__name__)


class Reporter:
    def __init__(self, runtime: Runtime, kind: Kind, who: str) -> None:
        self.runtime, self.kind, self._who = runtime, kind, who

    async def report(self, credential: Mapping[str, Any], round_: Round) -> None:
        """Post the Events, patch the status if it changed, publish the metrics."""
        runtime, meta = self.runtime, credential["metadata"]
        report = self.kind.report(round_, runtime.clock())
        for note in report.notes:
            await self.post(credential, note)
        if report.status is not None:
            try:
                async with Slot(runtime.kube_gate):
                    await runtime.kube.patch_status(
                        self.kind.plural, meta.get("namespace") or "", meta["name"], report.status
                    )
            except KubeError as error:
                if error.status != 404:  # deleted meanwhile; the watch will stop us
                    raise
        self.kind.reported(report)
        if report.overall is not None:
            runtime.metrics.publish(meta.get("namespace") or "", meta["name"], report.overall, None)

    async def post(self, credential: Mapping[str, Any], note: Note) -> None:
        ref = self.kind.event_ref(credential)
        try:
            async with Slot(self.runtime.kube_gate):
                await self.runtime.kube.post_event(ref, note.type, note.reason, note.message)
        except KubeError as error:
            logger.warning("%s: could not post Event %s: %s", self._who, note.reason, error)
