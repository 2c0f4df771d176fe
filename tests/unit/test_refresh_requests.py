"""Refresh requests are coalesced per account (issue 21, item 2), in process over World.

A refresh-requested-at value forces a new token; one credential, or many sharing an account,
must not turn annotation edits into Auth API calls. At most one request per credential is
honoured per minute and one forced refresh per account per 10 s; a later value waits and is
then honoured (never dropped), and the status shows it meanwhile (pendingRefreshRequest).
"""

from __future__ import annotations

from simacan_token_operator.model.schedule import (
    FORCED_REFRESH_WINDOW_SECONDS,
    REFRESH_REQUEST_INTERVAL_SECONDS,
)
from simacan_token_operator.reconcile.tokensecret import parse_rfc3339
from tests.unit.test_reconcile_pass import NS, World, clock, fake_auth, issued, world
from tests.unit.timeline import Key, Timeline

FIXTURES = (fake_auth, clock, world)
"""The in-process world of tests/unit/test_reconcile_pass.py, whose fixtures these tests use."""

ONE: Key = (NS, "fleet-api")


def refreshed_at(world: World, key: Key) -> float:
    at = parse_rfc3339(world.status(key[1], key[0])["refreshedAt"])
    assert at is not None
    return at


async def test_a_hundred_requests_within_a_minute_cost_two_auth_calls(world: World) -> None:
    await issued(world)
    timeline = Timeline(world, [ONE])
    world.clock.advance(1)
    start, before = world.clock.now, world.fake_auth.count()

    for i in range(100):  # 100 distinct values within 59.4 s
        world.annotate(f"request-{i:02d}")
        await timeline.nudge(ONE)
        if i == 50:
            assert world.status()["pendingRefreshRequest"] == "request-50", "shown while it waits"
            assert world.status()["lastRefreshRequest"] == "request-00"
        await timeline.until(world.clock.now + 0.6)
    await timeline.until(start + 3 * REFRESH_REQUEST_INTERVAL_SECONDS)

    assert world.fake_auth.count() - before == 2, "the first request at once, the last one a minute later"
    status = world.status()
    assert status["lastRefreshRequest"] == "request-99", "the last value is honoured, not dropped"
    assert "pendingRefreshRequest" not in status
    assert refreshed_at(world, ONE) >= start + REFRESH_REQUEST_INTERVAL_SECONDS - 1, "whole seconds"
    assert world.ready() == ("True", "TokenValid")


async def test_a_later_request_waits_a_minute_after_the_last_honoured_one(world: World) -> None:
    first = await issued(world)
    timeline = Timeline(world, [ONE])
    world.clock.advance(1)
    world.annotate("first")
    await timeline.nudge(ONE)
    honoured = world.clock.now
    second = world.token()
    assert second != first and world.status()["lastRefreshRequest"] == "first"

    world.clock.advance(5)
    world.annotate("second")
    await timeline.nudge(ONE)
    assert world.token() == second, "not honoured within the minute"
    assert world.status()["pendingRefreshRequest"] == "second"
    assert world.ready() == ("True", "TokenValid")
    assert timeline.wake[ONE] == honoured + REFRESH_REQUEST_INTERVAL_SECONDS, "the pass wakes when it may"

    await timeline.until(honoured + REFRESH_REQUEST_INTERVAL_SECONDS)
    assert world.token() != second
    assert world.status()["lastRefreshRequest"] == "second"
    assert world.fake_auth.count() == 3
    assert world.kube.event_reasons().count("RefreshRequested") == 2


def ten_namespaces(world: World) -> list[Key]:
    keys = [(f"team-{i}", "fleet-api") for i in range(10)]
    for namespace, name in keys:  # the same username and password in every namespace: one account
        world.login_secret(namespace=namespace)
        world.credential(name, namespace)
    return keys


async def test_ten_credentials_of_one_account_asking_ten_times_cost_two_auth_calls(world: World) -> None:
    keys = ten_namespaces(world)
    timeline = Timeline(world, keys)
    for key in keys:
        await timeline.nudge(key)
    assert world.fake_auth.count() == 1, "one account, one token"
    world.clock.advance(1)
    start, before = world.clock.now, world.fake_auth.count()

    for round_ in range(10):  # every credential asks once every 6 s: 100 requests within 54 s
        for namespace, name in keys:
            world.annotate(f"round-{round_}", name, namespace)
            await timeline.nudge((namespace, name))
        await timeline.until(start + 6 * (round_ + 1))
    await timeline.until(start + 3 * REFRESH_REQUEST_INTERVAL_SECONDS)

    assert world.fake_auth.count() - before <= 2
    for namespace, name in keys:
        status = world.status(name, namespace)
        assert status["lastRefreshRequest"] == "round-9", (namespace, "deferred, not dropped")
        assert "pendingRefreshRequest" not in status
        assert refreshed_at(world, (namespace, name)) > start + 54, "a token obtained after the last request"


async def test_requests_spread_over_a_round_are_served_at_the_end_of_the_account_window(world: World) -> None:
    """Requests that arrive while (or after) a forced refresh runs wait for the end of the account's
    window, and one call then serves them all: 10 credentials asking 0.05 s apart cost 2 calls in
    the first 10 s, not 10."""
    keys = ten_namespaces(world)
    timeline = Timeline(world, keys)
    for key in keys:
        await timeline.nudge(key)
    world.clock.advance(1)
    start, before = world.clock.now, world.fake_auth.count()
    first = {key: world.token(key[1], key[0]) for key in keys}

    for namespace, name in keys:
        world.annotate("now", name, namespace)
        await timeline.nudge((namespace, name))
        world.clock.advance(0.05)
    assert world.fake_auth.count() - before == 1
    pending = [k for k in keys if world.status(k[1], k[0]).get("pendingRefreshRequest") == "now"]
    assert pending == keys[1:], "the others wait for the account's window to end"

    await timeline.until(start + FORCED_REFRESH_WINDOW_SECONDS + 1)
    assert world.fake_auth.count() - before == 2
    assert all(world.status(k[1], k[0])["lastRefreshRequest"] == "now" for k in keys)
    assert all(world.token(k[1], k[0]) != first[k] for k in keys)


async def test_a_request_is_honoured_without_a_call_when_the_pool_has_a_newer_token(world: World) -> None:
    keys = ten_namespaces(world)[:2]
    timeline = Timeline(world, keys)
    for key in keys:
        await timeline.nudge(key)
    world.clock.advance(1)
    (ns_a, name), (ns_b, _) = keys
    world.annotate("a", name, ns_a)
    world.annotate("b", name, ns_b)
    await timeline.nudge(keys[0])
    await timeline.nudge(keys[1])  # asked before the first one's call started (same instant)

    assert world.fake_auth.count() == 2
    assert world.status(name, ns_b)["lastRefreshRequest"] == "b"
    assert world.token(name, ns_a) == world.token(name, ns_b)
