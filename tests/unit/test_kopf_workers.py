"""kopf keeps a task per object while its events come, and that task holds the object's last
event until it exits: the operator's settings make it exit soon after, so a wave of status
patches (one watch event per credential) is not held in memory all at once."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from kopf._core.reactor import queueing

from simacan_token_operator.app.handlers import operator_settings


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
