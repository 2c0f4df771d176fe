"""One token per login source: N credentials cost one Auth API call, and failures are shared too."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from localenv.fakeauth import DEFAULT_REFRESH_LIFETIME, FakeAuthAPI, Fault
from simacan_token_operator.auth.client import AuthAPI
from simacan_token_operator.auth.pool import MIN_FETCH_SPACING_SECONDS, TokenLifetimeTooShort, TokenPool
from simacan_token_operator.model.errors import (
    InvalidCredentials,
    MalformedResponse,
    RefreshDeferred,
    TransientAuthError,
)
from simacan_token_operator.model.schedule import (
    FORCED_REFRESH_WINDOW_SECONDS,
    URGENT_RETRY_CAP_SECONDS,
)
from simacan_token_operator.model.spec import LoginSource
from simacan_token_operator.model.tokens import TokenSet

if TYPE_CHECKING:
    from tests.unit.conftest import FakeClock


def any_token(token: TokenSet) -> bool:
    return True


def no_token(token: TokenSet) -> bool:
    """Forces a new token, as a credential whose refresh time has come does."""
    return False


def wrong_password(source: LoginSource) -> LoginSource:
    return LoginSource(source.auth_url, source.username, "wrong-password-Lk42Tr")


def traceback_depth(error: BaseException) -> int:
    depth, tb = 0, error.__traceback__
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    return depth


@pytest.fixture
def pool(api: AuthAPI, clock: FakeClock) -> TokenPool:
    return TokenPool(api, clock=clock)


async def test_concurrent_credentials_with_one_source_share_one_login(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource
) -> None:
    tokens = await asyncio.gather(*(pool.obtain(source, any_token) for _ in range(10)))

    assert fake_auth.count() == 1
    assert len({token.access_token for token in tokens}) == 1
    assert await pool.obtain(source, any_token) == tokens[0]
    assert fake_auth.count() == 1


async def test_concurrent_credentials_with_a_wrong_password_try_it_once(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource
) -> None:
    results = await asyncio.gather(
        *(pool.obtain(wrong_password(source), any_token) for _ in range(10)), return_exceptions=True
    )

    assert all(isinstance(result, InvalidCredentials) for result in results)
    assert fake_auth.count() == 1


async def test_different_accounts_get_their_own_tokens(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource
) -> None:
    fake_auth.add_user("other-bot@example.com", "other-password-Rt5")
    other = LoginSource(source.auth_url, "other-bot@example.com", "other-password-Rt5")

    mine, theirs = await asyncio.gather(pool.obtain(source, any_token), pool.obtain(other, any_token))

    assert (mine.subject, theirs.subject) == (source.username, other.username)
    assert fake_auth.count("password") == 2


async def test_usable_cached_token_costs_no_call(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource
) -> None:
    first = await pool.obtain(source, any_token)

    again = await pool.obtain(source, lambda token: token.expires_at > first.obtained_at)

    assert again is first
    assert fake_auth.count() == 1


async def test_token_due_for_refresh_is_refreshed_not_logged_in_again(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource
) -> None:
    first = await pool.obtain(source, any_token)

    second = await pool.obtain(source, no_token)

    assert second.access_token != first.access_token
    assert (fake_auth.count("password"), fake_auth.count("refresh", status=200)) == (1, 1)
    assert await pool.obtain(source, any_token) == second


async def test_rejected_refresh_falls_back_to_password_login(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource
) -> None:
    await pool.obtain(source, any_token)
    fake_auth.revoke_refresh_tokens()

    token = await pool.obtain(source, no_token)

    assert token.subject == source.username
    assert fake_auth.count("refresh", status=400) == 1
    assert fake_auth.count("password", status=200) == 2


async def test_expired_refresh_token_is_not_tried(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource, clock: FakeClock
) -> None:
    await pool.obtain(source, any_token)
    clock.advance(DEFAULT_REFRESH_LIFETIME + 1)

    await pool.obtain(source, no_token)

    assert fake_auth.count("refresh") == 0
    assert fake_auth.count("password", status=200) == 2


async def test_outage_during_refresh_backs_off_without_spending_a_password_login(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource
) -> None:
    await pool.obtain(source, any_token)
    fake_auth.fail_next("refresh", Fault.http_error(503))

    with pytest.raises(TransientAuthError):
        await pool.obtain(source, no_token)

    assert fake_auth.count("password") == 1
    assert pool.retry_at(source) is not None


async def test_rejected_password_is_remembered_until_forgiven(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource, clock: FakeClock
) -> None:
    """Retrying a wrong password on every reconcile could lock the account."""
    bad = wrong_password(source)
    with pytest.raises(InvalidCredentials):
        await pool.obtain(bad, any_token)
    clock.advance(7 * 86400)

    with pytest.raises(InvalidCredentials):
        await pool.obtain(bad, any_token)
    assert fake_auth.count("password") == 1

    pool.forgive(bad)
    with pytest.raises(InvalidCredentials):
        await pool.obtain(bad, any_token)
    assert fake_auth.count("password") == 2


async def test_forgiven_source_logs_in_once_the_password_is_fixed(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource
) -> None:
    bad = wrong_password(source)
    with pytest.raises(InvalidCredentials):
        await pool.obtain(bad, any_token)
    fake_auth.set_password(source.username, bad.password)

    pool.forgive(bad)
    token = await pool.obtain(bad, any_token)

    assert token.subject == source.username
    assert pool.retry_at(bad) is None


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault.http_error(503), id="503"),
        pytest.param(Fault.drop_connection(), id="connection-dropped"),
        pytest.param(Fault.html_page(), id="proxy-page"),
    ],
)
async def test_transient_failure_backs_off_for_every_sharer(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource, clock: FakeClock, fault: Fault
) -> None:
    fake_auth.fail_next("password", fault)
    with pytest.raises(TransientAuthError):
        await pool.obtain(source, any_token)
    retry_at = pool.retry_at(source)
    assert retry_at is not None and clock() + 2.5 <= retry_at < clock() + 5

    clock.advance(2.0)
    with pytest.raises(TransientAuthError):
        await pool.obtain(source, any_token)
    assert fake_auth.count() == 1

    clock.advance(retry_at - clock())
    token = await pool.obtain(source, any_token)
    assert token.subject == source.username
    assert fake_auth.count() == 2
    assert pool.retry_at(source) is None


async def test_backoff_grows_with_consecutive_failures(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource, clock: FakeClock
) -> None:
    await pool.obtain(source, any_token)  # a token with most of its life left: no hurry
    fake_auth.reset_counts()
    fake_auth.set_fault("password", Fault.http_error(503))
    fake_auth.set_fault("refresh", Fault.http_error(503))
    waits: list[float] = []
    for _ in range(4):
        with pytest.raises(TransientAuthError):
            await pool.obtain(source, no_token)
        retry_at = pool.retry_at(source)
        assert retry_at is not None
        waits.append(retry_at - clock())
        clock.advance(waits[-1])

    ceilings = [5.0, 10.0, 20.0, 40.0]
    assert all(ceiling / 2 <= wait < ceiling for wait, ceiling in zip(waits, ceilings, strict=True)), waits
    assert fake_auth.count() == 4


async def test_retry_after_holds_back_the_next_attempt(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource, clock: FakeClock
) -> None:
    fake_auth.fail_next("password", Fault.rate_limited(60))
    with pytest.raises(TransientAuthError):
        await pool.obtain(source, any_token)

    clock.advance(59)
    with pytest.raises(TransientAuthError):
        await pool.obtain(source, any_token)

    assert pool.retry_at(source) == pytest.approx(clock() + 1)
    assert fake_auth.count() == 1


async def test_remembered_failure_is_the_one_the_api_raised(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource
) -> None:
    fake_auth.fail_next("password", Fault.not_json())
    with pytest.raises(MalformedResponse) as first:
        await pool.obtain(source, any_token)

    with pytest.raises(MalformedResponse) as second:
        await pool.obtain(source, any_token)

    assert second.value.message == first.value.message


async def test_remembered_failure_does_not_pile_up_tracebacks(pool: TokenPool, source: LoginSource) -> None:
    depths: list[int] = []
    for _ in range(5):
        with pytest.raises(InvalidCredentials) as caught:
            await pool.obtain(wrong_password(source), any_token)
        depths.append(traceback_depth(caught.value))

    assert depths[1] == depths[-1]


async def test_detaching_the_last_user_drops_the_token(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource
) -> None:
    pool.attach(source, "logistics/fleet")
    pool.attach(source, "logistics/planner")
    await pool.obtain(source, any_token)

    pool.detach("logistics/fleet")
    await pool.obtain(source, any_token)
    assert fake_auth.count() == 1, "one user left: the token is kept"

    pool.detach("logistics/planner")
    await pool.obtain(source, any_token)
    assert fake_auth.count() == 2, "no user left: the token was dropped"


async def test_attaching_to_a_new_source_leaves_the_old_one(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource
) -> None:
    rotated = LoginSource(source.auth_url, source.username, "rotated-password-Vb7")
    pool.attach(source, "logistics/fleet")
    await pool.obtain(source, any_token)

    pool.attach(rotated, "logistics/fleet")

    await pool.obtain(source, any_token)
    assert fake_auth.count() == 2, "the old source's token was dropped with its last user"


async def test_detaching_forgets_a_remembered_rejection(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource
) -> None:
    bad = wrong_password(source)
    pool.attach(bad, "logistics/fleet")
    with pytest.raises(InvalidCredentials):
        await pool.obtain(bad, any_token)

    pool.detach("logistics/fleet")

    assert pool.retry_at(bad) is None


async def test_short_lived_tokens_are_fetched_at_most_once_per_spacing(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource, clock: FakeClock
) -> None:
    fake_auth.access_lifetime = 1
    await pool.obtain(source, no_token)

    with pytest.raises(TokenLifetimeTooShort) as raised:
        await pool.obtain(source, no_token)
    assert raised.value.reason == "TokenLifetimeTooShort"
    assert raised.value.retry_after is not None and 0 < raised.value.retry_after <= MIN_FETCH_SPACING_SECONDS
    assert fake_auth.count() == 1
    assert pool.retry_at(source) is None, "the spacing is not a failure: no backoff builds up"

    clock.advance(MIN_FETCH_SPACING_SECONDS)
    await pool.obtain(source, no_token)
    assert fake_auth.count() == 2


async def test_spacing_never_delays_a_normal_token(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource
) -> None:
    await pool.obtain(source, no_token)
    await pool.obtain(source, no_token)  # e.g. a password change right after a refresh

    assert fake_auth.count() == 2


# -- refresh requests: one forced refresh per account per window (issue 21, item 2) ---------------


async def test_a_forced_refresh_waits_for_the_accounts_window(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource, clock: FakeClock
) -> None:
    await pool.obtain(source, any_token)
    clock.advance(1)
    await pool.obtain(source, no_token, forced=True)
    assert fake_auth.count() == 2

    clock.advance(1)
    with pytest.raises(RefreshDeferred) as deferred:
        await pool.obtain(source, no_token, forced=True)
    assert deferred.value.retry_after == pytest.approx(FORCED_REFRESH_WINDOW_SECONDS - 1)
    assert fake_auth.count() == 2
    assert pool.retry_at(source) is None, "a deferral is not a failure: no backoff builds up"
    assert pool.forced_refresh_at(source, clock()) == pytest.approx(
        clock() + FORCED_REFRESH_WINDOW_SECONDS - 1
    )

    await pool.obtain(source, no_token)  # a due refresh is not a forced one: never held back
    assert fake_auth.count() == 3

    clock.advance(FORCED_REFRESH_WINDOW_SECONDS)
    await pool.obtain(source, no_token, forced=True)
    assert fake_auth.count() == 4


async def test_a_request_made_before_the_last_call_needs_no_new_one(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource, clock: FakeClock
) -> None:
    requested_at = clock()
    token = await pool.obtain(source, any_token)

    assert pool.forced_refresh_at(source, requested_at) == float("-inf")
    again = await pool.obtain(source, lambda t: t.obtained_at >= requested_at, forced=True)
    assert again is token and fake_auth.count() == 1


# -- outages: short retries while the token is about to expire (issue 21, item 10) -----------------


async def test_with_no_token_retries_are_at_most_15s_apart(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource, clock: FakeClock
) -> None:
    fake_auth.set_fault("password", Fault.http_error(503))
    waits: list[float] = []
    for _ in range(8):
        with pytest.raises(TransientAuthError):
            await pool.obtain(source, any_token)
        retry_at = pool.retry_at(source)
        assert retry_at is not None
        waits.append(retry_at - clock())
        clock.advance(waits[-1])

    assert all(wait <= URGENT_RETRY_CAP_SECONDS for wait in waits), waits
    assert all(wait >= URGENT_RETRY_CAP_SECONDS / 2 for wait in waits[2:]), waits
    assert fake_auth.count() == 8


async def test_a_caller_whose_token_is_about_to_expire_retries_sooner_than_the_backoff(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource, clock: FakeClock
) -> None:
    held = await pool.obtain(source, any_token)
    fake_auth.set_fault("password", Fault.http_error(503))
    fake_auth.set_fault("refresh", Fault.http_error(503))
    for _ in range(7):  # early in the token's life: the backoff grows to minutes
        retry_at = pool.retry_at(source, held)
        clock.advance(retry_at - clock() if retry_at is not None else 0)
        with pytest.raises(TransientAuthError):
            await pool.obtain(source, no_token, held=held)
    normal = pool.retry_at(source, held)
    assert normal is not None and normal - clock() > 60

    clock.now = held.expires_at - held.lifetime * 0.05  # in its last tenth now
    urgent = pool.retry_at(source, held)
    assert urgent is not None and urgent <= clock(), "the retry is due at once"
    with pytest.raises(TransientAuthError):
        await pool.obtain(source, no_token, held=held)
    assert fake_auth.count() == 9
    again = pool.retry_at(source, held)
    assert again is not None and again - clock() <= URGENT_RETRY_CAP_SECONDS


async def test_retry_after_still_holds_back_an_urgent_retry(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource, clock: FakeClock
) -> None:
    fake_auth.fail_next("password", Fault.rate_limited(60))
    with pytest.raises(TransientAuthError):
        await pool.obtain(source, any_token)  # no token at all: urgent

    clock.advance(59)
    with pytest.raises(TransientAuthError):
        await pool.obtain(source, any_token)
    assert pool.retry_at(source) == pytest.approx(clock() + 1)
    assert fake_auth.count() == 1


async def test_urgent_retries_are_one_call_for_every_sharer(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource, clock: FakeClock
) -> None:
    fake_auth.set_fault("password", Fault.http_error(503))
    for _ in range(5):
        results = await asyncio.gather(
            *(pool.obtain(source, any_token) for _ in range(10)), return_exceptions=True
        )
        assert all(isinstance(result, TransientAuthError) for result in results)
        retry_at = pool.retry_at(source)
        assert retry_at is not None
        clock.advance(retry_at - clock())

    assert fake_auth.count() == 5


async def test_a_request_made_before_a_call_in_flight_waits_for_that_call(
    fake_auth: FakeAuthAPI, pool: TokenPool, source: LoginSource, clock: FakeClock
) -> None:
    """Several targets of a ClusterSimacanCredential share one request: while the first one's
    forced refresh is under way, the others are not deferred to the end of the window."""
    requested_at = clock()
    fake_auth.fail_next("password", Fault.slow(0.3))
    first = asyncio.ensure_future(pool.obtain(source, no_token, forced=True))
    await fake_auth_called(fake_auth)

    assert pool.forced_refresh_at(source, requested_at) == float("-inf")
    second = await pool.obtain(source, lambda t: t.obtained_at >= requested_at, forced=True)
    assert second is await first
    assert fake_auth.count() == 1


async def fake_auth_called(fake_auth: FakeAuthAPI) -> None:
    """Until the Auth API has received the first call (it answers later)."""
    await asyncio.to_thread(fake_auth.wait_for_calls, 1)
