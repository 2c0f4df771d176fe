"""kopf settings that bound memory: a task per object holds its last event until it exits, and the
operator makes it exit soon after, so a wave of status patches (one watch event per credential)
is not held in memory all at once; and lists come a page at a time."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import kopf
from kopf._core.reactor import queueing

from simacan_token_operator.app.handlers import build_registry, operator_settings
from simacan_token_operator.app.metrics import Metrics
from simacan_token_operator.controller.routing import Controller
from simacan_token_operator.controller.runtime import Runtime
from simacan_token_operator.model.clusterspec import CLUSTER_PLURAL
from simacan_token_operator.model.spec import GROUP, PLURAL, VERSION


class Event(dict[str, Any]):
    """A raw watch event that a weak reference can follow."""


async def test_an_objects_last_event_is_let_go_within_a_second_of_being_handled() -> None:
    key: Any = ("simacancredentials", "uid-1")
    streams = {key: queueing.Stream(backlog=asyncio.Queue(), pressure=asyncio.Event())}
    handled = asyncio.Event()

    async def processor(*, raw_event: Any, **_: Any) -> None:
        handled.set()

    event = Event(type="MODIFIED", object={"metadata": {"uid": "uid-1", "resourceVersion": "7"}})
    last = weakref.ref(event)
    await streams[key].backlog.put(event)  # type: ignore[arg-type]
    del event
    worker = asyncio.create_task(
        queueing.worker(
            signaller=asyncio.Condition(),
            settings=operator_settings(),
            processor=processor,
            streams=streams,
            key=key,
        )
    )
    await asyncio.wait_for(handled.wait(), timeout=5)
    await asyncio.wait_for(worker, timeout=1)  # kopf's default keeps it 5 s
    gc.collect()
    assert last() is None, "the event outlived its worker"
    assert key not in streams


def test_kopf_lists_the_credentials_a_page_at_a_time() -> None:
    """kopf's default asks for every credential in one answer: 7.5 MiB at 10,000, held as bytes
    three times and as 32 MiB of parsed objects at once; kopf lets go of a page before the next
    (kopf/_cogs/clients/fetching.py). The RSS this saves is printed by
    `python -m benchmarks.footprint --credentials 10000` (docs/benchmarks.md)."""
    chunk = operator_settings().watching.chunk_size
    assert chunk is not None and 100 <= chunk <= 1000, chunk


async def test_no_handler_needs_kopfs_diff_base_so_none_is_built() -> None:
    """kopf deep-copies every event's object to diff it with the last handled one, for on.update
    and friends; the operator's handlers are all on.event, so the copy is skipped. A change
    handler or daemon added later would need the diff-base back: this test says so."""
    runtime: Any = Runtime(kube=None, pool=None, auth_policy=None, metrics=Metrics(), clock=lambda: 0.0)  # type: ignore[arg-type]
    registry = build_registry(Controller(runtime), asyncio.Event(), cluster=True)
    for plural in (PLURAL, CLUSTER_PLURAL):
        resource = kopf.Resource(GROUP, VERSION, plural)
        assert registry._watching.has_handlers(resource=resource), plural
        assert not registry._changing.has_handlers(resource=resource), plural
        assert not registry._spawning.has_handlers(resource=resource), plural

    body = kopf.Body({"metadata": {"name": "fleet-api", "labels": {"a": "b"}}, "spec": {"secretName": "x"}})
    assert operator_settings().persistence.diffbase_storage.build(body=body) == {}
