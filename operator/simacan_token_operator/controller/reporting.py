"""Telling the user what a round concluded: Events on the credential, its status, its metrics.

Status writes are fenced like Secret writes: each merge patch carries the resourceVersion of
the credential as last seen (its last watch event, or the answer to the last status patch), so
a patch computed from an outdated view, such as a former leader's late one, gets 409 instead of
overwriting a newer status. A 409 is not retried in a loop: the worker waits for the next watch
event, which brings the new version and the status as stored. A status seen in a watch event
that is not the one this process wrote last (another writer's, or a user's
`kubectl patch --subresource=status`) is compared with what the next pass renders and
rewritten if it differs; repeated corrections back off as restores of a Secret do.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from simacan_token_operator.controller.gates import REPORT
from simacan_token_operator.controller.kinds import Clusterwide, Kind, Report, Round
from simacan_token_operator.controller.runtime import Runtime
from simacan_token_operator.controller.target import Target
from simacan_token_operator.kube.client import KubeError
from simacan_token_operator.model.schedule import RESTORE_QUIET_SECONDS, restore_delay
from simacan_token_operator.reconcile.decide import Memory
from simacan_token_operator.reconcile.report import Note
from simacan_token_operator.reconcile.status import status_digest

logger = logging.getLogger(__name__)

PAST_VERSIONS = 8
"""How many superseded resourceVersions of our own writes are remembered: a late watch event of
one of them is old news, not another writer's status."""


def unwritten(memory: Memory) -> Memory:
    """A status refused with 409 is not the status stored: the next pass writes it again."""
    return dataclasses.replace(memory, status_digest=None)


def stored_digest(status: Mapping[str, Any] | None) -> str:
    """The digest of a status as the API server stores it (status.py's, so the two compare)."""
    return status_digest(status or {})


class StatusFence:
    """The credential's resourceVersion and stored status, as this process last learned them.

    Per credential a few short strings, no status dict: the pass keeps only a digest of what it
    wrote (reconcile.decide.Memory.status_digest, or the cluster kind's `status_digest`)."""

    __slots__ = (
        "_corrections",
        "_events",
        "_last_correction_at",
        "_past",
        "_retry",
        "_seen",
        "_stored",
        "conflicted",
        "correcting",
        "resource_version",
    )

    def __init__(self, resource_version: str | None, status: Mapping[str, Any] | None) -> None:
        self.resource_version = resource_version
        """Sent with the next status patch: from the last watch event or patch answer."""
        self._stored = stored_digest(status)
        """Digest of the status stored at that version."""
        self._past: tuple[str, ...] = ()
        """Versions our own patches replaced or that a later patch of ours superseded, the last
        PAST_VERSIONS of them (a tuple: thousands of credentials keep no deque each)."""
        self._events = 0
        """Watch events accepted: one arriving while a patch is in flight is newer than its precondition."""
        self._seen: str | None = None
        """A stored status not written by this process, not yet taken into account."""
        self._retry = False
        self.conflicted = False
        """A patch got 409 and no newer event has come yet: no patch until one does."""
        self._corrections = 0
        self._last_correction_at: float | None = None
        self.correcting = False
        """The round in progress took another writer's status into account."""

    # -- what the watch says --------------------------------------------------------------------

    def observed(self, resource_version: str | None, status: Mapping[str, Any] | None) -> bool:
        """A watch event of the credential; True if the worker should look at its status again."""
        if not resource_version or resource_version in (self.resource_version, *self._past):
            return False  # known already, or one our own write replaced, delivered late: not news
        self._events += 1
        self.resource_version = resource_version
        wake = False
        if self.conflicted:  # the event a 409 waited for: one retry with the new version
            self.conflicted, self._retry, wake = False, True, True
        digest = stored_digest(status)
        if digest != self._stored:  # not what we wrote last: someone else's (or a spec edit's echo)
            self._stored, self._seen, wake = digest, digest, True
        return wake

    def due(self, now: float) -> float | None:
        """When a round should take the stored status into account: now for a retry after a
        409, later for a correction that backs off; None when nothing waits."""
        if self._retry:
            return now
        due = self.correction_due()
        return None if due is None else max(due, now)

    def take(self, now: float) -> str | None:
        """The digest of the stored status, when the round starting now must compare its status
        with it (the pass then writes if they differ); None when nothing is due. Corrections of
        another writer's status back off (restore_delay) when they follow each other."""
        if self._seen is None and not self._retry:
            return None
        retry, self._retry = self._retry, False
        if not retry:
            due = self.correction_due()
            if due is not None and now < due:
                return None
            last = self._last_correction_at
            quiet = last is None or now - last >= RESTORE_QUIET_SECONDS
            self._corrections = 1 if quiet else self._corrections + 1
            self._last_correction_at = now
        self._seen = None
        self.correcting = not retry
        return self._stored

    def correction_due(self) -> float | None:
        """When the pending correction of another writer's status may be made; None if none is."""
        if self._seen is None:
            return None
        if self._last_correction_at is None:
            return 0.0
        return self._last_correction_at + restore_delay(self._corrections)

    # -- what our own patches say ---------------------------------------------------------------

    def sending(self) -> tuple[str | None, int]:
        """The precondition of the patch about to be sent, and a mark to pass to its answer."""
        return self.resource_version, self._events

    def written(self, sent: str | None, mark: int, answer: Mapping[str, Any]) -> None:
        """The patch succeeded: its answer is the object as stored after it."""
        meta = answer.get("metadata") or {}
        version = meta.get("resourceVersion")
        digest = stored_digest(answer.get("status"))
        if sent:
            self._past = (*self._past, sent)[-PAST_VERSIONS:]
        if isinstance(version, str) and version != self.resource_version:
            if self._events == mark:  # no event came meanwhile: the answer is the newest we know
                self.resource_version, self._stored = version, digest
            else:  # an event newer than our write came while it was in flight: that one stands
                self._past = (*self._past, version)[-PAST_VERSIONS:]
        if self._seen == digest:
            self._seen = None  # what the event showed is what we wrote
        self.correcting = False

    def conflict(self, mark: int) -> bool:
        """The patch got 409; True if an event came since it was sent (retry now with its
        version), else it waits for the next event."""
        if self._events != mark:
            self._retry = True
            return True
        self.conflicted = True
        return False


class Reporter:
    __slots__ = ("_who", "fence", "kind", "runtime")

    def __init__(self, runtime: Runtime, kind: Kind, who: str, fence: StatusFence) -> None:
        self.runtime, self.kind, self._who, self.fence = runtime, kind, who, fence

    def compare_with_stored(
        self, resumed: Memory | None, targets: Mapping[str, Target], dirty: frozenset[str] | None
    ) -> tuple[Memory | None, frozenset[str] | None]:
        """Before a round, where the stored status is not what this process wrote last (another
        writer's, or after a 409): the status rendered is compared with the stored one, not
        with our own last write, so a different one is written again. Adds the targets whose
        pass renders it to `dirty`; returns the memory a first pass resumes from, and `dirty`."""
        stored = self.fence.take(self.runtime.clock())
        if stored is None:
            return resumed, dirty
        if isinstance(self.kind, Clusterwide):  # its status is rendered from the targets' outcomes
            self.kind.status_digest = stored
            return resumed, dirty
        for namespace, target in targets.items():
            target.memory = dataclasses.replace(target.memory, status_digest=stored)
            if dirty is not None:
                dirty |= {namespace}
        return (None if resumed is None else dataclasses.replace(resumed, status_digest=stored)), dirty

    def next_round(self, pending: list[float]) -> float | None:
        """The earliest of `pending` and of a round the status waits for (a retry, a correction)."""
        due = self.fence.due(self.runtime.clock())
        times = pending if due is None else [*pending, due]
        return min(times) if times else None

    async def report(self, credential: Mapping[str, Any], round_: Round) -> bool:
        """Post the Events, patch the status if it changed, publish the metrics; False if a
        status to write was not written (409, or waiting for the watch event after one).

        The Events go first: a problem starts with its Warning Event, and good news is there
        when the status shows it. In a wave (calls about the namespace queue) a Normal Event
        is held (news.News) and goes after every status waiting: the Events of 2,000
        credentials' first sync would otherwise hold back the last status by as many calls.
        A status patch that fails does not swallow them: the next round will not say them again."""
        runtime, meta = self.runtime, credential["metadata"]
        report = self.kind.report(round_, runtime.clock())
        news: tuple[Note, ...] = ()
        if report.status is not None and runtime.gates.queued(meta.get("namespace") or None):
            news = tuple(note for note in report.notes if note.type == "Normal")
        for note in report.notes:
            if note not in news:
                await self.post(credential, note)
        written, failure = True, None
        try:
            if report.status is not None:
                written = await self._patch(meta, report.status)
        except KubeError as error:
            failure = error
        for note in news:
            runtime.news.hold(self.kind.event_ref(credential), note, self._who)
        if failure is not None:
            raise failure
        self.kind.reported(report if written else Report(report.notes, None, report.overall, None))
        if report.overall is not None:
            runtime.metrics.publish(meta.get("namespace") or "", meta["name"], report.overall, None)
        if report.status is None:
            self.fence.correcting = False
        return written

    async def _patch(self, meta: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
        fence = self.fence
        if fence.conflicted:
            return False  # the version we hold is stale: the next watch event brings a newer one
        sent, mark = fence.sending()
        correcting = fence.correcting
        try:
            async with self.runtime.gates.slot(meta.get("namespace") or None, REPORT):
                answer = await self.runtime.kube.patch_status(
                    self.kind.plural, meta.get("namespace") or "", meta["name"], status, sent or ""
                )
        except KubeError as error:
            if error.status == 404:  # deleted meanwhile; the watch will stop us
                return True
            if error.status != 409:
                raise
            now = fence.conflict(mark)
            logger.info(
                "%s: the status changed since version %s; writing it %s",
                self._who,
                sent,
                "again with the newer version" if now else "again after the next watch event",
            )
            return False
        fence.written(sent, mark, answer)
        if correcting:
            logger.info("%s: the status had been changed by another writer; wrote it again", self._who)
        return True

    async def post(self, credential: Mapping[str, Any], note: Note) -> None:
        await self.runtime.news.post(self.kind.event_ref(credential), note, self._who, REPORT)
