"""The stale-consumer check's view of each namespace: verdicts on its workloads, never the workloads.

A tenant controls its namespace's workloads and the operator serves every namespace, so what is
read and kept here is bounded whatever a tenant creates:

- A survey lists a namespace's workloads metadata only, PAGE_SIZE at a time (`limit`,
  `continue`), keeping of each item its name, uid and generation (kube.WorkloadStamp).
- Only a workload whose uid or generation is new is read in full, and decoded keeping only the
  fields the check uses (consumers.TEMPLATE_FIELDS). What is kept is a consumers.Verdict: kind,
  name, and the Secrets read at start; nothing for a workload that reads none.
- At most NAMESPACE_CAP entries per namespace and TOTAL_CAP in all; beyond them a survey reports
  the verdicts it has and says it is partial, and nothing more is read or kept.
- Surveys run in one background task, one request at a time for the whole operator, each
  namespace TURN_REQUESTS requests at a time in turn. So the transient memory is one page or one
  workload; a large namespace, or one whose workloads keep changing, delays the others' checks by
  a turn at most; and no token pass waits for a survey: a pass takes the latest one, and a new
  survey nudges the namespace's credentials.
- A namespace is surveyed at most once per WORKLOAD_LIST_TTL_SECONDS for all its credentials,
  and forgotten with its last credential.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from simacan_token_operator.kube.client import KubeError, StampPage, WorkloadStamp
from simacan_token_operator.model.spec import WORKLOAD_KINDS
from simacan_token_operator.reconcile import consumers
from simacan_token_operator.reconcile.consumers import Survey, Verdict

logger = logging.getLogger(__name__)

WORKLOAD_LIST_TTL_SECONDS = 60.0
"""A namespace is surveyed at most this often, for all its credentials."""

PAGE_SIZE = 10
"""Workloads per list request. A page is held (bytes, then text) while it is decoded, and the
API server lets one object's metadata reach about 1.5 MiB (etcd's request limit; annotations
alone may take 256 KiB and managedFields grow with every field manager). Ten items keep a page
of ordinary workloads (a few KiB of metadata each) near 50 KiB, one at the annotation limit with
as much managedFields near 10 MiB, and the absolute worst case, ten objects that are all
metadata, near 30 MiB, for the one page in flight in the whole operator. Larger pages save
requests only for namespaces of hundreds of workloads, which cost one request per ten a minute."""

NAMESPACE_CAP = 2_000
"""Entries kept per namespace: a workload counts one, plus one per Secret it reads at start.
Far above what a namespace runs, and at most about 1.2 MiB (measured: some 250 bytes for a
workload that reads no Secret at start, 700 to 1,150 for one that reads one, with names of 20
to 253 characters)."""

TOTAL_CAP = 20_000
"""Entries kept in all: at most about 12 MiB. Ten namespaces at their cap fill it; the surveys
of namespaces that find it full then say they are partial. The check is advisory and tokens are
never affected, while a bound on the operator's memory protects every tenant."""

TURN_REQUESTS = 10
"""Requests one namespace's survey makes before the next namespace's survey takes its turn."""


class WorkloadReader(Protocol):
    async def list_workload_stamps(
        self, namespace: str, kind: str, limit: int, continue_token: str | None
    ) -> StampPage: ...
    async def read_workload_fields(
        self, namespace: str, kind: str, name: str, keep: frozenset[str]
    ) -> dict[str, Any] | None: ...


_TOO_LARGE = Verdict("", "", frozenset())
"""Kept in place of a verdict that would go over a cap: the workload is not read again while
its generation stays, and the survey says it is partial."""

Entry = tuple[int | str, Verdict | None]
"""(generation, verdict); the verdict is None for a workload that reads no Secret at start."""


def _cost(entry: Entry) -> int:
    verdict = entry[1]
    return 1 if verdict is None or verdict is _TOO_LARGE else 1 + len(verdict.reads_at_start)


@dataclass(eq=False)
class _Namespace:
    users: dict[str, Callable[[], None]] = field(default_factory=dict)
    """Credential key -> how to wake its worker when a new survey is ready."""
    entries: dict[str, Entry] = field(default_factory=dict)
    """By workload uid."""
    cost: int = 0
    survey: Survey | None = None
    surveyed_at: float | None = None
    forbidden: bool = False
    queued: bool = False
    walk: AsyncGenerator[None, None] | None = None
    """The survey under way: it yields after each request."""
    found: Survey | None = None
    """What the walk found, once it is done."""
    evicted: bool = False


@dataclass
class _Counts:
    listed: int = 0
    pages: int = 0
    read: int = 0


class NamespaceWorkloads:
    """Per namespace, the verdicts on its workloads, shared by the credentials in it.

    This schedules the surveys, a turn each; _Surveyor walks one and keeps what it finds."""

    def __init__(
        self,
        kube: WorkloadReader,
        clock: Callable[[], float],
        namespace_cap: int = NAMESPACE_CAP,
        total_cap: int = TOTAL_CAP,
    ) -> None:
        self.clock = clock
        self._surveyor = _Surveyor(kube, namespace_cap, total_cap)
        self._namespaces: dict[str, _Namespace] = {}
        self._due: deque[tuple[str, _Namespace]] = deque()
        self._task: asyncio.Task[None] | None = None

    def survey(self, namespace: str, user: str, nudge: Callable[[], None]) -> Survey | None:
        """The namespace's latest survey for credential `user`; None before the first one and
        where the operator may not read workloads (the check is off there, logged once).

        Starts a new survey when the latest is older than the TTL; `nudge` is called when one is
        ready and differs from the latest."""
        state = self._namespaces.get(namespace)
        if state is None:
            state = self._namespaces[namespace] = _Namespace()
        state.users[user] = nudge
        if state.forbidden:
            return None
        due = state.surveyed_at is None or self.clock() >= state.surveyed_at + WORKLOAD_LIST_TTL_SECONDS
        if due and not state.queued:
            state.queued = True
            self._due.append((namespace, state))
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(
                    self._run(), name="workload-surveys", context=contextvars.Context()
                )
        return state.survey

    def release(self, namespace: str, user: str) -> None:
        """`user` no longer needs the namespace's survey; with the last user it is forgotten."""
        state = self._namespaces.get(namespace)
        if state is None:
            return
        state.users.pop(user, None)
        if state.users:
            return
        del self._namespaces[namespace]
        state.evicted = True
        self._surveyor.forget(state)
        state.survey = None

    @property
    def kept(self) -> int:
        """Entries kept in all (for tests and the bound's proof)."""
        return self._surveyor.total

    async def settled(self) -> None:
        """Until no survey is due or under way."""
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})

    async def _run(self) -> None:
        while self._due:
            namespace, state = self._due.popleft()
            if state.evicted:
                continue
            try:
                done = await self._turn(namespace, state)
            except asyncio.CancelledError:
                state.queued = False  # the next pass queues it again
                raise
            except Exception as error:  # a failed survey never stops the others
                self._failed(namespace, state, error)
                continue
            if state.evicted:
                continue
            if not done:
                self._due.append((namespace, state))  # its turn is over: the others go first
                continue
            found, state.found = state.found, None
            state.queued, state.surveyed_at = False, self.clock()
            if found is not None and found != state.survey:
                state.survey = found
                for nudge in list(state.users.values()):
                    nudge()

    async def _turn(self, namespace: str, state: _Namespace) -> bool:
        """Up to TURN_REQUESTS requests of the namespace's survey; True when it is done."""
        if state.walk is None:
            state.walk = self._surveyor.walk(namespace, state)
        walk = state.walk
        try:
            for _ in range(TURN_REQUESTS):
                await anext(walk)
                if state.evicted:
                    await walk.aclose()
                    return True
        except StopAsyncIteration:
            state.walk = None
            return True
        except BaseException:
            state.walk = None
            raise
        return False

    def _failed(self, namespace: str, state: _Namespace, error: Exception) -> None:
        state.queued, state.surveyed_at = False, self.clock()  # try again after the TTL
        if isinstance(error, KubeError) and error.status in (403, 404):  # 404: no apps group
            if state.evicted:
                return
            state.forbidden = True
            self._surveyor.forget(state)
            state.survey = None
            logger.warning(
                "cannot read workloads in %s (HTTP %s); the stale-consumer check is off there",
                namespace,
                error.status,
            )
        elif isinstance(error, KubeError):
            logger.warning("surveying workloads in %s: %s; trying again in a minute", namespace, error)
        else:
            logger.exception("surveying workloads in %s failed; trying again in a minute", namespace)


class _Surveyor:
    """Walks a namespace's survey, and keeps the verdicts within the caps, per namespace and in all."""

    def __init__(self, kube: WorkloadReader, namespace_cap: int, total_cap: int) -> None:
        self.kube = kube
        self.namespace_cap = namespace_cap
        self.total_cap = total_cap
        self.total = 0
        """Entries kept in all."""

    async def walk(self, namespace: str, state: _Namespace) -> AsyncGenerator[None, None]:
        """One survey: pages of stamps, and a full read of each new or changed workload.
        Yields after each request; leaves its result in `state.found`."""
        seen: set[str] = set()
        counts = _Counts()
        partial = full = False
        for kind in WORKLOAD_KINDS:
            token: str | None = None
            while not full:
                page = await self.kube.list_workload_stamps(namespace, kind, PAGE_SIZE, token)
                counts.pages += 1
                yield
                for stamp in page.stamps:
                    if len(seen) >= self.namespace_cap:  # listing on would only hold more uids
                        full = True
                        break
                    counts.listed += 1
                    seen.add(stamp.uid)
                    entry = state.entries.get(stamp.uid)
                    if entry is not None and entry[0] == stamp.generation:
                        partial |= entry[1] is _TOO_LARGE
                        continue
                    if entry is not None:
                        self._drop(state, stamp.uid)
                    if not self._room(state, 1):
                        partial = True
                        continue
                    body = await self.kube.read_workload_fields(
                        namespace, kind, stamp.name, consumers.TEMPLATE_FIELDS
                    )
                    counts.read += 1
                    yield
                    if body is not None:
                        uid = self._keep(state, kind, stamp, body)
                        seen.add(uid)
                        partial |= state.entries[uid][1] is _TOO_LARGE
                token = page.continue_token
                if token is None:
                    break
            if full:
                partial = True
                break
        for uid in [uid for uid in state.entries if uid not in seen]:  # deleted since
            self._drop(state, uid)
        verdicts = (v for _, v in state.entries.values() if v is not None and v is not _TOO_LARGE)
        state.found = Survey(tuple(sorted(verdicts, key=lambda v: (v.kind, v.name))), partial)
        logger.debug(
            "surveyed workloads in %s: %d listed in %d pages of up to %d, %d read in full, %d entries kept%s",
            namespace,
            counts.listed,
            counts.pages,
            PAGE_SIZE,
            counts.read,
            state.cost,
            " (partial)" if partial else "",
        )

    def forget(self, state: _Namespace) -> None:
        """Give back what the namespace keeps: it was evicted, or the check is off there."""
        self.total -= state.cost
        state.cost = 0
        state.entries.clear()

    def _room(self, state: _Namespace, cost: int) -> bool:
        return state.cost + cost <= self.namespace_cap and self.total + cost <= self.total_cap

    def _keep(self, state: _Namespace, kind: str, stamp: WorkloadStamp, body: dict[str, Any]) -> str:
        """Keep the verdict on a workload read in full; returns the uid it was kept under (the
        body's: a workload re-created between list and read is another workload)."""
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or stamp.uid)
        generation = meta.get("generation")
        if not isinstance(generation, int):
            generation = str(meta.get("resourceVersion") or stamp.generation)
        if uid in state.entries:
            self._drop(state, uid)
        verdict = consumers.verdict(kind, body)
        entry: Entry = (generation, verdict if verdict.reads_at_start else None)
        if not self._room(state, _cost(entry)):
            entry = (generation, _TOO_LARGE)
        state.entries[uid] = entry
        self._charge(state, _cost(entry))
        return uid

    def _drop(self, state: _Namespace, uid: str) -> None:
        entry = state.entries.pop(uid, None)
        if entry is not None:
            self._charge(state, -_cost(entry))

    def _charge(self, state: _Namespace, cost: int) -> None:
        state.cost += cost
        if not state.evicted:
            self.total += cost
