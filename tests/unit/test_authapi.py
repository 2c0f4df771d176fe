"""The Auth API client against a real HTTP fake: typed errors decide retry versus give up."""

from __future__ import annotations

import time
import traceback
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import pytest

from localenv.auth_standin import ExpiresInStyle, FakeAuthAPI, Fault
from simacan_token_operator.authapi import AuthAPI, http_client
from simacan_token_operator.errors import (
    AuthError,
    InvalidCredentials,
    MalformedResponse,
    PermanentAuthError,
    RefreshRejected,
    TransientAuthError,
)
from simacan_token_operator.spec import LoginSource
from simacan_token_operator.tokens import TokenSet

if TYPE_CHECKING:
    from tests.unit.conftest import Observation

SLOWER_THAN_THE_CLIENT = 3.0


async def login(api: AuthAPI, source: LoginSource) -> TokenSet:
    return await api.login(source.auth_url, source.username, source.password)


def wrong_password(source: LoginSource) -> LoginSource:
    return LoginSource(source.auth_url, source.username, "wrong-password-Lk42Tr")


async def test_login_returns_the_issued_pair(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource
) -> None:
    before = time.time()

    token = await api.login(source.auth_url, source.username, source.password)

    issued = {issued.token for issued in fake_auth.issued_tokens}
    assert token.access_token in issued and token.refresh_token in issued
    assert token.subject == source.username
    assert before <= token.obtained_at <= time.time()
    assert token.lifetime == pytest.approx(3600, abs=1.5)
    assert token.refreshable_at(time.time())
    assert fake_auth.count("password") == 1


@pytest.mark.parametrize("style", ["string", "number", "omit"])
async def test_login_reads_every_expires_in_style(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource, style: ExpiresInStyle
) -> None:
    fake_auth.expires_in_style = style

    token = await api.login(source.auth_url, source.username, source.password)

    assert token.lifetime == pytest.approx(3600, abs=1.5)


async def test_base_url_with_trailing_slash_works(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource
) -> None:
    await api.login(source.auth_url + "/", source.username, source.password)

    assert fake_auth.count("password", status=200) == 1


async def test_refresh_returns_a_new_pair(fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource) -> None:
    first = await api.login(source.auth_url, source.username, source.password)
    assert first.refresh_token is not None

    second = await api.refresh(source.auth_url, first.refresh_token)

    assert second.access_token != first.access_token
    assert second.subject == source.username
    assert fake_auth.count("refresh", username=source.username, status=200) == 1


async def test_wrong_password_is_invalid_credentials(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource
) -> None:
    with pytest.raises(InvalidCredentials) as caught:
        await login(api, wrong_password(source))

    assert isinstance(caught.value, PermanentAuthError)
    assert caught.value.reason == "InvalidCredentials"
    assert fake_auth.count("password", status=401) == 1


@pytest.mark.parametrize("status", [400, 401])
async def test_refused_refresh_token_is_refresh_rejected(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource, status: int
) -> None:
    fake_auth.refresh_error_status = status
    first = await api.login(source.auth_url, source.username, source.password)
    assert first.refresh_token is not None
    fake_auth.revoke_refresh_tokens()

    with pytest.raises(RefreshRejected):
        await api.refresh(source.auth_url, first.refresh_token)

    assert fake_auth.count("refresh", status=status) == 1


async def test_unknown_refresh_token_is_refresh_rejected(api: AuthAPI, source: LoginSource) -> None:
    with pytest.raises(RefreshRejected):
        await api.refresh(source.auth_url, "not-a-token-this-fake-issued")


TRANSIENT_FAULTS = [
    pytest.param(Fault.http_error(500), id="500"),
    pytest.param(Fault.http_error(502, "<html>Bad Gateway</html>"), id="502-html"),
    pytest.param(Fault.http_error(503), id="503"),
    pytest.param(Fault.http_error(408), id="408"),
    pytest.param(Fault.drop_connection(), id="connection-dropped"),
    pytest.param(Fault.slow(SLOWER_THAN_THE_CLIENT), id="timeout"),
]


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS)
async def test_server_trouble_on_login_is_transient(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource, fault: Fault
) -> None:
    fake_auth.fail_next("password", fault)

    with pytest.raises(TransientAuthError) as caught:
        await login(api, source)

    assert type(caught.value) is TransientAuthError
    assert caught.value.retry_after is None


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS)
async def test_server_trouble_on_refresh_is_transient_not_a_rejection(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource, fault: Fault
) -> None:
    first = await api.login(source.auth_url, source.username, source.password)
    assert first.refresh_token is not None
    fake_auth.fail_next("refresh", fault)

    with pytest.raises(TransientAuthError) as caught:
        await api.refresh(source.auth_url, first.refresh_token)

    assert type(caught.value) is TransientAuthError


async def test_unreachable_server_is_transient(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource
) -> None:
    fake_auth.stop()

    with pytest.raises(TransientAuthError, match="cannot reach"):
        await login(api, source)


async def test_too_many_requests_carries_retry_after(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource
) -> None:
    fake_auth.fail_next("password", Fault.rate_limited(2))

    with pytest.raises(TransientAuthError) as caught:
        await login(api, source)

    assert caught.value.retry_after == 2


async def test_retry_after_as_http_date_is_seconds_from_now(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource
) -> None:
    in_two_minutes = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    fake_auth.fail_next("password", Fault.http_error(503, headers={"Retry-After": in_two_minutes}))

    with pytest.raises(TransientAuthError) as caught:
        await login(api, source)

    assert caught.value.retry_after == pytest.approx(120, abs=2)


@pytest.mark.parametrize("header", ["soon", "-5"])
async def test_unusable_retry_after_is_not_a_floor(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource, header: str
) -> None:
    fake_auth.fail_next("password", Fault.http_error(429, headers={"Retry-After": header}))

    with pytest.raises(TransientAuthError) as caught:
        await login(api, source)

    assert not caught.value.retry_after


MALFORMED_FAULTS = [
    pytest.param(Fault.not_json(), id="not-json"),
    pytest.param(Fault.html_page(), id="html-page-with-200"),
    pytest.param(Fault.missing_fields(), id="no-access-token"),
    pytest.param(Fault.missing_fields("access_token", "refresh_token"), id="no-tokens"),
    pytest.param(Fault.access_token_not_jwt(), id="access-token-not-jwt"),
    pytest.param(Fault.no_expiry(), id="no-expiry"),
    pytest.param(Fault.huge_body(), id="huge-body"),
]


@pytest.mark.parametrize("fault", MALFORMED_FAULTS)
async def test_unusable_200_is_malformed_and_retried(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource, fault: Fault
) -> None:
    fake_auth.fail_next("password", fault)

    with pytest.raises(MalformedResponse) as caught:
        await login(api, source)

    assert isinstance(caught.value, TransientAuthError)
    assert caught.value.reason == "MalformedResponse"


@pytest.mark.parametrize(
    "fault",
    [pytest.param(Fault.http_error(404), id="404"), pytest.param(Fault.http_error(403), id="403")],
)
async def test_client_errors_are_permanent(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource, fault: Fault
) -> None:
    fake_auth.fail_next("password", fault)

    with pytest.raises(PermanentAuthError, match="check authURL") as caught:
        await login(api, source)

    assert type(caught.value) is PermanentAuthError


async def test_wrong_path_is_permanent(fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource) -> None:
    wrong = LoginSource(f"http://127.0.0.1:{fake_auth.port}/api/v2", source.username, source.password)

    with pytest.raises(PermanentAuthError, match="404"):
        await login(api, wrong)


async def test_redirect_is_not_followed(fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource) -> None:
    """Following a redirect would post the password to wherever it points."""
    fake_auth.fail_next("password", Fault.http_error(307, headers={"Location": "http://127.0.0.1:9/steal"}))

    with pytest.raises(PermanentAuthError, match="307"):
        await login(api, source)


async def test_every_request_is_observed(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource, observations: list[Observation]
) -> None:
    token = await api.login(source.auth_url, source.username, source.password)
    assert token.refresh_token is not None
    await api.refresh(source.auth_url, token.refresh_token)
    with pytest.raises(AuthError):
        await login(api, wrong_password(source))
    fake_auth.fail_next("password", Fault.http_error(503))
    with pytest.raises(AuthError):
        await login(api, source)
    fake_auth.fail_next("password", Fault.drop_connection())
    with pytest.raises(AuthError):
        await login(api, source)
    fake_auth.fail_next("password", Fault.slow(SLOWER_THAN_THE_CLIENT))
    with pytest.raises(AuthError):
        await login(api, source)

    assert [(endpoint, outcome) for endpoint, outcome, _ in observations] == [
        ("password", "ok"),
        ("refresh", "ok"),
        ("password", "401"),
        ("password", "503"),
        ("password", "unreachable"),
        ("password", "timeout"),
    ]
    assert all(0 <= seconds < 5 for _, _, seconds in observations)
    assert observations[-1][2] >= 0.4, "a timeout is observed after the client's 0.5 s"


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault.huge_body(), id="huge-body"),
        pytest.param(Fault.not_json(), id="not-json"),
        pytest.param(Fault.access_token_not_jwt(), id="access-token-not-jwt"),
    ],
)
async def test_malformed_response_is_not_observed_as_ok(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource, observations: list[Observation], fault: Fault
) -> None:
    fake_auth.fail_next("password", fault)

    with pytest.raises(MalformedResponse):
        await login(api, source)

    assert [outcome for _, outcome, _ in observations] == ["malformed"]


async def test_no_error_ever_shows_a_password_or_token(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource
) -> None:
    errors: list[AuthError] = []

    async def attempt(call: Awaitable[object]) -> None:
        try:
            await call
        except AuthError as error:
            errors.append(error)

    token = await api.login(source.auth_url, source.username, source.password)
    assert token.refresh_token is not None
    await attempt(login(api, wrong_password(source)))
    for fault in [*(p.values[0] for p in TRANSIENT_FAULTS), *(p.values[0] for p in MALFORMED_FAULTS)]:
        assert isinstance(fault, Fault)
        fake_auth.fail_next("password", fault)
        await attempt(login(api, source))
        fake_auth.fail_next("refresh", fault)
        await attempt(api.refresh(source.auth_url, token.refresh_token))
    fake_auth.revoke_refresh_tokens()
    await attempt(api.refresh(source.auth_url, token.refresh_token))
    wrong_path = LoginSource(f"http://127.0.0.1:{fake_auth.port}/nope", source.username, "pw-Zq1")
    await attempt(login(api, wrong_path))

    secrets = fake_auth.secret_strings() | {"pw-Zq1"}
    assert len(errors) == 3 + 2 * (len(TRANSIENT_FAULTS) + len(MALFORMED_FAULTS))
    assert source.password in secrets and token.access_token in secrets
    for error in errors:
        shown = "".join(traceback.format_exception(error)) + repr(error) + error.message
        leaked = [secret for secret in secrets if secret in shown]
        assert not leaked, f"{type(error).__name__}: {error} shows a secret"


async def test_operator_client_never_follows_redirects() -> None:
    async with http_client() as client:
        assert client.follow_redirects is False
