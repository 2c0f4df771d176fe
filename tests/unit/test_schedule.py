"""When a token is replaced and how long a failing login waits: the numbers users rely on."""

from __future__ import annotations

import pytest

from simacan_token_operator.model.schedule import backoff_delay, jitter_fraction, parse_duration, refresh_time

START = 1_700_000_000.0
HOUR = 3600.0
KUBELET_SYNC_DELAY = 90.0
"""How late kubelet may update a mounted Secret; a refresh must leave more than this before expiry."""

JITTERS = [0.0, 0.25, 0.5, 0.75, 0.999999]
LIFETIMES = [60.0, 300.0, HOUR, 12 * HOUR, 24 * HOUR]


def max_spread(lifetime: float) -> float:
    return min(0.05 * lifetime, 120.0)


@pytest.mark.parametrize("lifetime", LIFETIMES, ids=lambda s: f"{s:g}s")
def test_without_jitter_refresh_is_two_thirds_into_the_life(lifetime: float) -> None:
    assert refresh_time(START, START + lifetime, None, 0.0) == pytest.approx(START + lifetime * 2 / 3)


@pytest.mark.parametrize("jitter", JITTERS)
@pytest.mark.parametrize("lifetime", LIFETIMES, ids=lambda s: f"{s:g}s")
def test_jitter_only_moves_the_refresh_earlier_within_the_spread(lifetime: float, jitter: float) -> None:
    planned = START + lifetime * 2 / 3

    at = refresh_time(START, START + lifetime, None, jitter)

    assert planned - max_spread(lifetime) < at <= planned
    assert at == pytest.approx(planned - max_spread(lifetime) * jitter)


def test_jitter_spread_is_at_most_two_minutes_for_long_tokens() -> None:
    planned = START + 24 * HOUR * 2 / 3

    assert planned - refresh_time(START, START + 24 * HOUR, None, 0.999999) == pytest.approx(120, abs=1e-3)


@pytest.mark.parametrize("jitter", JITTERS)
def test_refresh_before_is_honoured(jitter: float) -> None:
    at = refresh_time(START, START + HOUR, 15 * 60, jitter)

    assert START + HOUR - 15 * 60 - 120 < at <= START + HOUR - 15 * 60


@pytest.mark.parametrize("refresh_before", [HOUR, HOUR + 1, 2 * HOUR, 7 * 24 * HOUR], ids=lambda s: f"{s:g}s")
@pytest.mark.parametrize("jitter", [0.0, 0.999999])
def test_refresh_before_beyond_the_life_clamps_to_a_tenth_of_it(refresh_before: float, jitter: float) -> None:
    """Otherwise every new token would already be due: a login loop."""
    assert refresh_time(START, START + HOUR, refresh_before, jitter) == pytest.approx(START + 360)


def test_default_schedule_leaves_more_than_kubelets_delay_before_expiry() -> None:
    jitters = [*JITTERS, *(jitter_fraction(f"ns-{i}/credential") for i in range(1000))]

    margins = [START + HOUR - refresh_time(START, START + HOUR, None, jitter) for jitter in jitters]

    assert min(margins) > KUBELET_SYNC_DELAY


def test_refresh_of_a_token_with_no_life_left_is_not_before_it_was_obtained() -> None:
    assert refresh_time(START, START, None, 0.5) == START


def test_jitter_fraction_is_stable_per_key() -> None:
    """Pinned values: the same in every process and every release, so a regression to Python's
    salted hash() (a different value in each process) fails here."""
    assert jitter_fraction("prod/fleet-api") == 0.7694606991092674
    assert jitter_fraction("logistics/fleet-api") == 0.6305817112776189


def test_jitter_fraction_is_in_unit_interval_and_differs_between_keys() -> None:
    values = [jitter_fraction(f"namespace-{i}/credential") for i in range(500)]

    assert all(0.0 <= value < 1.0 for value in values)
    assert len(set(values)) == len(values)
    assert min(values) < 0.1 and max(values) > 0.9, "values should spread over the interval"


@pytest.mark.parametrize("jitter", [0.0, 0.5, 0.999999])
def test_first_backoff_is_about_five_seconds(jitter: float) -> None:
    assert 2.5 <= backoff_delay(1, jitter) < 5.0


@pytest.mark.parametrize("failures", range(1, 6))
@pytest.mark.parametrize("jitter", [0.0, 0.5, 0.999999])
def test_backoff_doubles_with_each_failure(failures: int, jitter: float) -> None:
    assert backoff_delay(failures + 1, jitter) == pytest.approx(2 * backoff_delay(failures, jitter))


@pytest.mark.parametrize("failures", [7, 8, 20, 1000])
@pytest.mark.parametrize("jitter", [0.0, 0.999999])
def test_backoff_caps_at_five_minutes(failures: int, jitter: float) -> None:
    assert 150.0 <= backoff_delay(failures, jitter) < 300.0


def test_backoff_reaches_the_cap() -> None:
    assert backoff_delay(30, 0.999999) == pytest.approx(300.0, abs=1e-3)


@pytest.mark.parametrize(
    ("failures", "jitter", "retry_after", "delay"),
    [
        pytest.param(1, 0.0, 60.0, 60.0, id="retry-after-longer-wins"),
        pytest.param(1, 0.5, 2.0, 3.75, id="retry-after-shorter-ignored"),
        pytest.param(10, 0.0, 200.0, 200.0, id="retry-after-beyond-cap-wins"),
        pytest.param(1, 0.0, 86400.0, 3600.0, id="retry-after-capped-at-an-hour"),
        pytest.param(1, 0.0, 0.0, 2.5, id="retry-after-zero-ignored"),
        pytest.param(1, 0.0, -30.0, 2.5, id="retry-after-negative-ignored"),
    ],
)
def test_retry_after_is_a_floor(failures: int, jitter: float, retry_after: float, delay: float) -> None:
    assert backoff_delay(failures, jitter, retry_after) == pytest.approx(delay)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15m", 900.0),
        ("1h30m", 5400.0),
        ("90s", 90.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("2h0m5s", 7205.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration_reads_kubernetes_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "15", "m", "15x", "-5m", "15m ", " 15m", "15 m", "1h30", "1.h", "15M"])
def test_parse_duration_rejects_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
