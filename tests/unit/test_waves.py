"""Refresh waves that would not fit: when the operator cannot write every Secret of an account
WAVE_MARGIN_SECONDS before its token expires at the write rate it measures, the account's
shared refresh starts earlier, and the operator says so once per token (a log line, a metric)."""

from __future__ import annotations

import asyncio
import collections
import logging

import pytest

from simacan_token_operator.app.metrics import Metrics
from simacan_token_operator.auth.client import AuthAPI
from simacan_token_operator.auth.pool import (
    CALLS_PER_ROUND,
    MAX_WAVE_STRETCH,
    WAVE_MARGIN_SECONDS,
    WAVE_SAFETY,
    TokenPool,
    wave_start,
)
from simacan_token_operator.controller.gates import PASS, REPORT, KubeGates
from simacan_token_operator.model.schedule import MIN_REFRESH_FRACTION, jitter_fraction, refresh_time
from simacan_token_operator.model.spec import LoginSource
from simacan_token_operator.model.tokens import TokenSet
from simacan_token_operator.reconcile.decide import Memory
from simacan_token_operator.reconcile.tokensecret import parse_rfc3339
from tests.unit.test_reconcile_pass import NS, World, clock, fake_auth, world

FIXTURES = (fake_auth, clock, world)
"""The in-process world of tests/unit/test_reconcile_pass.py, whose fixtures these tests use."""

ADVANCED = "simacan_refresh_advanced_total"


def token(obtained_at: float = 1000.0, lifetime: float = 60.0) -> TokenSet:
    return TokenSet("access", None, obtained_at, obtained_at + lifetime, subject="bot")


def test_a_short_lived_token_keeps_a_margin_of_a_tenth_of_its_life_not_five_seconds() -> None:
    """A 4 s token (the tests') with one credential: its wave needs nothing like 5 s, so it is not
    moved to a tenth of its life (a refresh every 0.4 s), only to 0.4 s before it expires."""
    t = TokenSet("a", None, obtained_at=1000.0, expires_at=1004.0)
    assert wave_start(t, 1, 4000.0) == pytest.approx(1004.0 - 0.4 - 1 / 4000.0 * WAVE_SAFETY)


def test_a_wave_starts_late_enough_to_land_the_margin_before_expiry() -> None:
    t = token()
    assert wave_start(t, 2000, 400.0) == 1060.0 - WAVE_MARGIN_SECONDS - 2000 / 400.0 * WAVE_SAFETY
    assert wave_start(t, 100_000, 400.0) == 1000.0 + 60.0 * MIN_REFRESH_FRACTION, "never before 1/10 of life"


async def test_the_pool_moves_a_wave_earlier_only_when_it_would_not_fit_and_says_so_once(
    api: AuthAPI, source: LoginSource, caplog: pytest.LogCaptureFixture
) -> None:
    rate: list[float | None] = [None]
    metrics = Metrics()
    pool = TokenPool(api, write_rate=lambda: rate[0], on_advanced=metrics.count_refresh_advanced)
    for i in range(2000):
        pool.attach(source, f"ns/c{i}")
    t, planned = token(), 1038.0

    assert pool.refresh_at(source, t, planned) == planned, "no rate measured yet: as planned"
    rate[0] = 400.0  # 2,000 writes take 7.5 s with the safety factor: the wave fits
    assert pool.refresh_at(source, t, planned) == planned
    assert metrics.registry.get_sample_value(ADVANCED) == 0

    rate[0] = 60.0  # busy CPUs: 50 s needed, the wave must start at 5 s (1/10 of life is 6 s)
    with caplog.at_level(logging.WARNING):
        assert pool.refresh_at(source, t, planned) == 1006.0
        assert pool.refresh_at(source, t, planned - 1) == 1006.0
    assert metrics.registry.get_sample_value(ADVANCED) == 1, "counted once per token"
    said = [r.getMessage() for r in caplog.records if "starting the shared refresh" in r.getMessage()]
    assert len(said) == 1 and "2000 credentials" in said[0] and "32s earlier than planned" in said[0]
    assert source.username not in said[0]

    assert pool.refresh_at(source, token(obtained_at=1050.0), 1088.0) == 1056.0
    assert metrics.registry.get_sample_value(ADVANCED) == 2, "the next token's wave is said again"
    pool.refresh_at(source, t, planned)
    assert metrics.registry.get_sample_value(ADVANCED) == 2, "passes still weighing the older token: no news"
    newer = token(obtained_at=1100.0)  # expires at 1160; planned for 1138
    rate[0] = 2000 * WAVE_SAFETY / 17.5  # the wave needs 17.5 s: it starts at 1137.5
    assert pool.refresh_at(source, newer, 1138.0) == pytest.approx(1137.5)
    assert metrics.registry.get_sample_value(ADVANCED) == 2, "half a second earlier: used, not said"


async def test_the_write_rate_comes_from_the_time_passes_hold_their_slots() -> None:
    gates = KubeGates(limit=8, per_namespace=2)
    assert gates.write_rate() is None
    async with gates.slot("tenant", PASS) as slot:
        await asyncio.sleep(0.05)
        await slot.given_up_while(asyncio.sleep(0.3))  # waiting for a token is not holding a slot
    async with gates.slot("tenant", REPORT):
        await asyncio.sleep(0.3)  # status patches are not passes
    assert gates.pass_seconds is not None and 0.05 <= gates.pass_seconds < 0.2
    rate = gates.write_rate()
    assert rate is not None and 2 / 0.2 < rate <= 2 / 0.05


async def test_a_credential_refreshes_earlier_when_its_accounts_wave_would_not_fit(world: World) -> None:
    """Two credentials share an account (tokens live an hour); the operator writes 0.002 Secrets
    a second. One credential's wave (750 s with the safety factor) fits before its 2/3 mark, two
    (1,500 s) do not: both then refresh at expiry - 5 s - 1,500 s, and the new token is fetched then."""
    assert world.runtime is not None
    metrics = world.runtime.metrics
    assert isinstance(metrics, Metrics)
    world.runtime.pool = TokenPool(
        world.api, clock=world.clock, write_rate=lambda: 0.002, on_advanced=metrics.count_refresh_advanced
    )
    world.login_secret()
    world.credential("a")
    await world.run("a")
    first = world.token("a")
    refreshed = parse_rfc3339(world.status("a")["refreshedAt"])
    planned = parse_rfc3339(world.status("a")["nextRefreshAt"])
    expires = parse_rfc3339(world.status("a")["expiresAt"])
    assert refreshed is not None and planned is not None and expires is not None
    assert planned >= refreshed + 3600 * 0.6, "one credential's wave fits: refreshed as planned"
    assert metrics.registry.get_sample_value(ADVANCED) == 0

    world.credential("b")
    await world.run("b")
    await world.run("a")
    start = expires - WAVE_MARGIN_SECONDS - 2 / 0.002 * WAVE_SAFETY
    for name in ("a", "b"):
        assert world.status(name)["nextRefreshAt"] == world.status("b")["nextRefreshAt"]
        advanced = parse_rfc3339(world.status(name)["nextRefreshAt"])
        assert advanced is not None and abs(advanced - start) <= 1
    assert metrics.registry.get_sample_value(ADVANCED) == 1

    world.clock.now = start + 1
    await world.run("a")
    assert world.token("a") != first, "the shared refresh started at the earlier time"


async def test_a_wave_start_stays_put_while_the_measured_rate_only_wavers(
    api: AuthAPI, source: LoginSource
) -> None:
    """The rate is measured on every pass; a start that followed each small change would give
    each credential's status another nextRefreshAt, and so another status patch."""
    rate = [60.0]
    pool = TokenPool(api, write_rate=lambda: rate[0])
    for i in range(2000):
        pool.attach(source, f"ns/c{i}")
    t = token(lifetime=600.0)  # expires at 1600; 2,000 writes at 60/s take 50 s with the safety factor
    first = pool.refresh_at(source, t, 1580.0)
    assert first == pytest.approx(1600.0 - WAVE_MARGIN_SECONDS - 2000 / 60.0 * WAVE_SAFETY)
    rate[0] = 61.0  # the start would move by 0.8 s: it stays
    assert pool.refresh_at(source, t, 1580.0) == first
    rate[0] = 40.0  # the start moves by 25 s: it follows
    assert pool.refresh_at(source, t, 1580.0) == pytest.approx(
        1600.0 - WAVE_MARGIN_SECONDS - 2000 / 40.0 * WAVE_SAFETY
    )


async def test_a_wave_that_fits_is_spread_at_the_pace_its_rounds_can_go(
    api: AuthAPI, source: LoginSource
) -> None:
    """10,000 credentials, 300 s tokens, 450 Secret writes a second: the jitter alone would wake
    them all within 15 s (about 670 a second), faster than their Secret writes and status patches
    can go, and thousands of rounds would wait at once. Spread past the planned time, no second
    wakes more rounds than the rate serves; the first of them, which fetches the account's next
    token, is where it was, and the last still lands half the margin before expiry."""
    rate = [450.0]
    pool = TokenPool(api, write_rate=lambda: rate[0])
    users = [f"ns/c{i}" for i in range(10_000)]
    for user in users:
        pool.attach(source, user)
    t = token(lifetime=300.0)
    positions = [jitter_fraction(user) for user in users]
    planned = [refresh_time(t.obtained_at, t.expires_at, None, p) for p in positions]

    spread = [pool.refresh_at(source, t, at, p) for at, p in zip(planned, positions, strict=True)]

    def busiest_second(times: list[float]) -> int:
        return max(collections.Counter(int(at) for at in times).values())

    assert busiest_second(planned) > 450, "the jitter alone wakes more a second than the rate serves"
    assert busiest_second(spread) <= 450 / CALLS_PER_ROUND
    assert min(spread) == pytest.approx(min(planned), abs=0.01), "the shared refresh keeps its time"
    assert max(spread) <= t.expires_at - (t.expires_at - max(planned)) * MAX_WAVE_STRETCH
    assert max(spread) <= wave_start(t, len(users), 450.0)
    rate[0] = 430.0  # the measured rate wavers: no credential's time moves
    assert [pool.refresh_at(source, t, at, p) for at, p in zip(planned, positions, strict=True)] == spread
    assert pool.refresh_at(source, t, planned[0], None) == planned[0], "a refreshBefore is kept"
    rate[0] = 300.0  # the rate falls: worked out again, the spread would put them later
    moved = [pool.refresh_at(source, t, at, p) for at, p in zip(planned, positions, strict=True)]
    assert sum(m > s + 1 for m, s in zip(moved, spread, strict=True)) > 1000
    kept = [pool.refresh_at(source, t, at, p, s) for at, p, s in zip(planned, positions, spread, strict=True)]
    latest = wave_start(t, len(users), 300.0)  # but a time once planned stands, unless the wave
    assert kept == [min(s, latest) for s in spread]  # must now start before it
    forged = pool.refresh_at(source, t, planned[0], positions[0], kept=t.expires_at - 1)
    assert forged <= t.expires_at - (t.expires_at - planned[0]) * MAX_WAVE_STRETCH, "a status can't delay it"
    rate[0] = 450.0
    hour = token(lifetime=3600.0)  # the 2-minute jitter spreads 10,000 at 450/s: nothing moves
    for p in positions[:100]:
        at = refresh_time(hour.obtained_at, hour.expires_at, None, p)
        assert pool.refresh_at(source, hour, at, p) == at


async def test_a_credential_woken_at_its_planned_time_refreshes_even_if_the_rate_fell(
    world: World, source: LoginSource
) -> None:
    """Its time is kept for its token (Memory.planned_refresh, and after a restart the status's
    nextRefreshAt): worked out again with a lower rate, the spread would put it later, and the
    pass would only patch the status with a new nextRefreshAt."""
    assert world.runtime is not None
    rate = [20.0]  # 2,000 credentials need 200 s at 20 writes/s: more than the 2-minute jitter
    world.runtime.pool = pool = TokenPool(world.api, clock=world.clock, write_rate=lambda: rate[0])
    for i in range(2000):
        pool.attach(source, f"{NS}/other-{i}")
    world.login_secret()
    world.credential("a")
    await world.run("a")
    status = world.status("a")
    planned = parse_rfc3339(status["nextRefreshAt"])
    expires = parse_rfc3339(status["expiresAt"])
    assert planned is not None and expires is not None
    assert Memory.from_status(status).planned_refresh == (expires, planned), "a restart keeps it too"
    first = world.token("a")
    rate[0] = 10.0  # worked out again, the spread would be longer
    world.clock.now = planned + 1  # nextRefreshAt is to the second: the time planned is before this
    await world.run("a")
    refreshed = world.token("a") != first
    assert refreshed, "due at the time it planned"
