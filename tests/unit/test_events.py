"""Which Events fold into one: same object, type, reason and message, within ten minutes."""

from __future__ import annotations

from simacan_token_operator.kube.events import EventMemory
from tests.unit.conftest import FakeClock

KEY = ("uid-1", "Warning", "AuthUnavailable", "HTTP 503")


def test_a_repeat_within_the_window_names_the_first_event() -> None:
    clock = FakeClock(0.0)
    memory = EventMemory(monotonic=clock)
    assert memory.repeat_of(KEY) is None
    memory.posted(KEY, "fleet-api.1")
    clock.advance(599)
    repeat = memory.repeat_of(KEY)
    assert repeat is not None and (repeat.name, repeat.count) == ("fleet-api.1", 1)
    memory.incremented(KEY, 2)
    assert memory.repeat_of(KEY).count == 2  # type: ignore[union-attr]


def test_after_ten_minutes_a_new_event_is_posted() -> None:
    clock = FakeClock(0.0)
    memory = EventMemory(monotonic=clock)
    memory.posted(KEY, "fleet-api.1")
    clock.advance(601)
    assert memory.repeat_of(KEY) is None


def test_other_objects_reasons_and_messages_are_separate() -> None:
    memory = EventMemory()
    memory.posted(KEY, "fleet-api.1")
    for other in (
        ("uid-2", *KEY[1:]),
        (KEY[0], "Normal", *KEY[2:]),
        (*KEY[:2], "X", KEY[3]),
        (*KEY[:3], "m"),
    ):
        assert memory.repeat_of(other) is None


def test_the_memory_is_bounded_and_forgets_the_least_recently_used() -> None:
    memory = EventMemory(size=2)
    a, b, c = (("uid", "Warning", "R", m) for m in "abc")
    memory.posted(a, "a")
    memory.posted(b, "b")
    memory.repeat_of(a)  # a is used again: b is now the oldest
    memory.posted(c, "c")
    assert memory.repeat_of(b) is None
    assert memory.repeat_of(a) is not None and memory.repeat_of(c) is not None
