"""The memory floor for footprint.py: a kopf operator that watches SimacanCredentials and does nothing.

Run it as ``python -m kopf run --standalone --namespace NS benchmarks/idle_kopf_operator.py`` with
IDLE_KOPF_SEEN_FILE set: the benchmark reads that file to know when every object has come through the
watch stream. Posting of k8s Events is off, as in the real operator, so "idle" means no API writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kopf

SEEN_FILE_ENV = "IDLE_KOPF_SEEN_FILE"

_seen: set[str] = set()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf would otherwise post a k8s Event for every "Handler succeeded" log line: not idle.
    settings.posting.enabled = False


@kopf.on.event("auth.simacan.com", "v1alpha1", "simacancredentials")
async def seen(event: kopf.RawEvent, uid: str | None, **_: Any) -> None:
    """No-op apart from counting distinct objects, so the benchmark can tell when the list is in.

    Async like the operator's handlers: a sync one would make kopf start a thread pool.
    """
    if uid is None or event["type"] == "DELETED" or uid in _seen:
        return
    _seen.add(uid)
    path = os.environ.get(SEEN_FILE_ENV)
    if path:
        target = Path(path)
        partial = target.with_suffix(".tmp")
        partial.write_text(f"{len(_seen)}\n")
        partial.replace(target)  # atomic: the reader never sees a half-written number
