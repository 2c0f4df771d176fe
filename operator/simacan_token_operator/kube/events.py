"""Which Event to write: a new one, or a count increment on one posted moments ago.

client-go's recorder folds repeats (same object, type, reason and message) into one Event
whose `count` and `lastTimestamp` grow, so a problem that recurs every few seconds makes one
line in `kubectl describe`, not hundreds of objects in etcd. This is the pure half of that:
a small bounded memory of recent Events; kube.py does the writing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

AGGREGATION_WINDOW = 600.0
"""Repeats within 10 minutes of the first occurrence increment it (client-go uses the same)."""
CACHE_SIZE = 4096
"""Events remembered; the least recently used are forgotten first (client-go keeps 4096 too)."""

EventKey = tuple[str, str, str, str]
"""(object uid, type, reason, message)."""


@dataclass
class Recorded:
    name: str
    count: int
    first_seen: float


class EventMemory:
    def __init__(
        self,
        window: float = AGGREGATION_WINDOW,
        size: int = CACHE_SIZE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window, self._size, self._monotonic = window, size, monotonic
        self._recent: OrderedDict[EventKey, Recorded] = OrderedDict()

    def repeat_of(self, key: EventKey) -> Recorded | None:
        """The Event to increment, or None when a new one is due."""
        recorded = self._recent.get(key)
        if recorded is None:
            return None
        if self._monotonic() - recorded.first_seen > self._window:
            del self._recent[key]
            return None
        self._recent.move_to_end(key)
        return recorded

    def posted(self, key: EventKey, name: str) -> None:
        self._recent[key] = Recorded(name, 1, self._monotonic())
        self._recent.move_to_end(key)
        while len(self._recent) > self._size:
            self._recent.popitem(last=False)

    def incremented(self, key: EventKey, count: int) -> None:
        recorded = self._recent.get(key)
        if recorded is not None:
            recorded.count = count

    def forget(self, key: EventKey) -> None:
        """The Event is gone (expired by the API server's TTL): the next one is posted afresh."""
        self._recent.pop(key, None)
