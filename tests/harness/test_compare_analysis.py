"""The comparison benchmark's reader arithmetic: what counts as holding an expired token, and for how long."""

from __future__ import annotations

import pytest

from localenv.exposure import Sighting, analyse

START = 1_000.0


def test_a_token_replaced_before_expiry_is_never_expired() -> None:
    seen = [Sighting("a", START + 1, START + 60), Sighting("a", START + 41, START + 100)]
    exposure = analyse(seen, ["a"], START, START + 90)
    assert exposure.expired_seconds == 0
    assert exposure.worst_lateness == 0
    assert exposure.late_episodes == 0
    assert exposure.all_exist_after == 1
    assert exposure.held_seconds == 89


def test_a_late_replacement_counts_from_expiry_to_the_new_token() -> None:
    seen = [Sighting("a", START, START + 60), Sighting("a", START + 64.5, START + 124.5)]
    exposure = analyse(seen, ["a"], START, START + 100)
    assert exposure.expired_seconds == pytest.approx(4.5)
    assert exposure.worst_lateness == pytest.approx(4.5)
    assert exposure.late_episodes == 1
    assert exposure.expired_share == pytest.approx(4.5 / 100)


def test_a_token_still_expired_at_the_end_counts_until_the_end() -> None:
    exposure = analyse([Sighting("a", START, START + 10)], ["a"], START, START + 30)
    assert exposure.expired_seconds == 20
    assert exposure.worst_lateness == 20


def test_a_secret_never_written_means_not_all_exist_and_is_not_counted_as_expired() -> None:
    exposure = analyse([Sighting("a", START + 2, START + 60)], ["a", "b"], START, START + 30)
    assert exposure.all_exist_after is None
    assert exposure.existed == 1
    assert exposure.expired_seconds == 0
    assert exposure.timeline[0] == (0.0, 0, 2)
    assert exposure.timeline[5] == (5.0, 0, 1)


def test_the_timeline_counts_secrets_holding_an_expired_token_each_step() -> None:
    seen = [
        Sighting("a", START, START + 5),
        Sighting("b", START, START + 7),
        Sighting("a", START + 8, START + 20),
    ]
    exposure = analyse(seen, ["a", "b"], START, START + 10)
    expired = [point[1] for point in exposure.timeline]
    assert expired == [0, 0, 0, 0, 0, 1, 1, 2, 1, 1, 1]
    assert exposure.worst_lateness == 3  # b: expired at 7, never replaced by the end at 10
    assert exposure.expired_seconds == 3 + 3


def test_a_deleted_secret_is_missing_not_expired() -> None:
    seen = [Sighting("a", START, START + 60), Sighting("a", START + 10, None)]
    exposure = analyse(seen, ["a"], START, START + 100)
    assert exposure.expired_seconds == 0
    assert exposure.held_seconds == 10
    assert exposure.timeline[-1][2] == 1
