"""Back to a valid token within seconds of the Auth API's return (issue 21, item 10), in process.

While the token at hand is in the last tenth of its life, expired, or missing, retries for its
account are at most URGENT_RETRY_CAP_SECONDS apart instead of backing off to 5 minutes; the pool
still makes one call per account, whatever the number of credentials.
"""

from __future__ import annotations

from localenv.fakeauth import Fault
from simacan_token_operator.model.schedule import BACKOFF_BASE_SECONDS, URGENT_RETRY_CAP_SECONDS
from simacan_token_operator.reconcile.tokensecret import parse_rfc3339
from tests.unit.conftest import PASSWORD, USERNAME
from tests.unit.test_reconcile_pass import World, clock, fake_auth, world
from tests.unit.timeline import Key, Timeline

FIXTURES = (fake_auth, clock, world)
"""The in-process world of tests/unit/test_reconcile_pass.py, whose fixtures these tests use."""

LIFETIME = 60
OUTAGE_SECONDS = 300.0


def outage(world: World, on: bool) -> None:
    for endpoint in ("password", "refresh"):
        world.fake_auth.set_fault(endpoint, Fault.http_error(503) if on else None)


def credentials(world: World, accounts: int, per_account: int) -> list[Key]:
    """`per_account` credentials (each in its own namespace) for each of `accounts` accounts."""
    keys = []
    for a in range(accounts):
        username, password = (USERNAME, PASSWORD) if a == 0 else (f"bot-{a}@example.com", f"pw-{a}-Zr81")
        if a:
            world.fake_auth.add_user(username, password)
        for c in range(per_account):
            namespace = f"team-{a}-{c}"
            world.login_secret(namespace=namespace, username=username, password=password)
            world.credential("fleet-api", namespace)
            keys.append((namespace, "fleet-api"))
    return keys


def refresh_point(world: World, key: Key) -> float:
    at = parse_rfc3339(world.status(key[1], key[0])["nextRefreshAt"])
    assert at is not None
    return at


async def test_after_five_minutes_of_503s_every_secret_is_valid_within_15s_of_the_return(
    world: World,
) -> None:
    world.fake_auth.access_lifetime = LIFETIME
    keys = credentials(world, accounts=2, per_account=3)
    timeline = Timeline(world, keys)
    for key in keys:
        await timeline.nudge(key)
    assert world.fake_auth.count() == 2, "one login per account"

    began = min(refresh_point(world, key) for key in keys)
    await timeline.until(began)
    outage(world, True)
    await timeline.until(began + OUTAGE_SECONDS)
    assert all(world.ready(k[1], k[0]) == ("False", "AuthUnavailable") for k in keys), "tokens expired"
    per_account = [world.fake_auth.count(username=u) - 1 for u in (USERNAME, "bot-1@example.com")]
    # Urgent retries come at least URGENT_RETRY_CAP_SECONDS / 2 apart once the backoff reaches its
    # cap (after three failures): one account's calls, not one per credential.
    bound = OUTAGE_SECONDS / (URGENT_RETRY_CAP_SECONDS / 2) + 4
    assert all(0 < calls <= bound for calls in per_account), (per_account, bound)

    outage(world, False)
    back = world.clock.now
    await timeline.until(back + URGENT_RETRY_CAP_SECONDS)

    for namespace, name in keys:
        assert world.ready(name, namespace) == ("True", "TokenValid"), namespace
        assert timeline.expiry((namespace, name)) > world.clock.now, namespace
    assert world.fake_auth.count(status=200) - 2 <= 2, "one new token per account"


async def test_ten_seconds_of_503s_at_the_refresh_point_leave_no_secret_expired(world: World) -> None:
    """With 60 s tokens the refresh comes 20 s before expiry; 10 s of 503s must not use them up,
    whatever the backoff's jitter: 24 accounts, each with its own jitter, and each retried
    once its token enters the last tenth of its life at the latest."""
    world.fake_auth.access_lifetime = LIFETIME
    keys = credentials(world, accounts=24, per_account=1)
    timeline = Timeline(world, keys)
    for key in keys:
        await timeline.nudge(key)
    for cycle in range(2):
        began = min(refresh_point(world, key) for key in keys)
        await timeline.until(began)
        outage(world, True)
        await timeline.until(began + 10)
        outage(world, False)
        await timeline.until(began + LIFETIME)
        assert timeline.expired_seen == [], (cycle, timeline.expired_seen)
    assert all(world.ready(k[1], k[0]) == ("True", "TokenValid") for k in keys)


async def test_a_long_backoff_gives_way_when_the_token_enters_its_last_tenth(world: World) -> None:
    """Failures early in a token's life back off to minutes; once the token is about to expire,
    the pass wakes at that moment and retries."""
    world.fake_auth.access_lifetime = 3600
    (key,) = credentials(world, accounts=1, per_account=1)
    timeline = Timeline(world, [key])
    await timeline.nudge(key)
    outage(world, True)
    await timeline.until(refresh_point(world, key) + 500)  # backs off to minutes meanwhile
    last_tenth = timeline.expiry(key) - 360
    assert world.clock.now < last_tenth

    before = world.fake_auth.count()
    await timeline.until(last_tenth - 1)
    waits = world.fake_auth.count() - before
    outage(world, False)
    await timeline.until(last_tenth + BACKOFF_BASE_SECONDS)
    assert world.ready(key[1], key[0]) == ("True", "TokenValid")
    assert timeline.expiry(key) > last_tenth + 3000, "a new token, at the start of the last tenth"
    assert waits <= 6, "the backoff before the last tenth stays long"
