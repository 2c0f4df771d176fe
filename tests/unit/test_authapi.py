"""The Auth API client against a real HTTP fake: typed errors decide retry versus give up."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from localenv.fakeauth import ExpiresInStyle, FakeAuthAPI, Fault
from simacan_token_operator.auth.client import MAX_BODY_BYTES, REQUEST_DEADLINE, AuthAPI, http_client
from simacan_token_operator.model.errors import (
    AuthError,
    InvalidCredentials,
    MalformedResponse,
    PermanentAuthError,
    RefreshRejected,
    TransientAuthError,
)
from simacan_token_operator.model.spec import LoginSource
from simacan_token_operator.model.tokens import TokenSet
from tests.conftest import SUMMARY

if TYPE_CHECKING:
    from tests.unit.conftest import MakeJwt, Observation

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


# ------------------------------------------------------------------ encodings and compression bombs

BOMB_DECODED_BYTES = 128 * 1024 * 1024
"""Decodes to 512 times the body limit, yet takes only about 128 KiB on the wire: under the wire limit."""


async def test_gzip_encoded_answer_is_decoded(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource
) -> None:
    fake_auth.fail_next("password", Fault.gzipped())

    token = await login(api, source)

    assert token.access_token in {issued.token for issued in fake_auth.issued_tokens}


async def test_gzip_bomb_stops_at_the_body_limit(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource
) -> None:
    fake_auth.fail_next("password", Fault.gzip_bomb(BOMB_DECODED_BYTES))

    with pytest.raises(MalformedResponse, match=f"larger than {MAX_BODY_BYTES} bytes"):
        await login(api, source)


@pytest.mark.parametrize(
    "encoding", ["gzip, gzip", "gzip,gzip", "deflate", "br", "zstd", "compress", "gzip, br", "x-unknown"]
)
async def test_stacked_or_unknown_content_encoding_is_malformed(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource, encoding: str
) -> None:
    fake_auth.fail_next("password", Fault.raw(b"\x1f\x8b-anything", {"Content-Encoding": encoding}))

    with pytest.raises(MalformedResponse, match="Content-Encoding"):
        await login(api, source)


async def test_stacked_gzip_bomb_is_refused_before_decoding(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource
) -> None:
    fake_auth.fail_next("password", Fault.gzip_bomb(BOMB_DECODED_BYTES, layers=2))

    with pytest.raises(MalformedResponse, match="Content-Encoding 'gzip, gzip'"):
        await login(api, source)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"this is not gzip at all", id="not-gzip"),
        pytest.param(gzip.compress(b'{"access_token": "x"}')[:-6], id="truncated"),
        pytest.param(gzip.compress(b"{}") + b"trailing", id="data-after-the-stream"),
        pytest.param(gzip.compress(b"{}") + gzip.compress(b"{}"), id="two-members"),
    ],
)
async def test_bad_gzip_is_malformed(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource, body: bytes
) -> None:
    fake_auth.fail_next("password", Fault.raw(body, {"Content-Encoding": "gzip"}))

    with pytest.raises(MalformedResponse, match="gzip"):
        await login(api, source)


@pytest.mark.parametrize("encoding", ["identity", "gzip, identity", "GZIP", "x-gzip"])
async def test_identity_and_gzip_spellings_are_accepted(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource, make_jwt: MakeJwt, encoding: str
) -> None:
    body = json.dumps({"access_token": make_jwt(exp=time.time() + 3600), "token_type": "bearer"}).encode()
    if "gzip" in encoding.lower():
        body = gzip.compress(body)
    fake_auth.fail_next("password", Fault.raw(body, {"Content-Encoding": encoding}))

    assert (await login(api, source)).lifetime == pytest.approx(3600, abs=2)


_RSS_PROBE = """
import asyncio, json, resource, sys
import httpx
from simacan_token_operator.auth.client import AuthAPI

def peak_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

async def main(url, how):
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        before = peak_kib()
        if how == "operator":
            try:
                await AuthAPI(client).login(url, "u", "p")
                outcome = "ok"
            except Exception as error:
                outcome = type(error).__name__
        else:  # what a plain httpx client does with the same answer
            response = await client.post(url + "/auth/password", data={"username": "u", "password": "p"})
            outcome = str(len(response.content))
        print(json.dumps({"outcome": outcome, "grew_kib": peak_kib() - before}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _peak_rss_growth(url: str, how: str) -> tuple[str, float]:
    """Peak RSS growth in MiB of a fresh process that sends one login to `url` (fresh: a clean peak)."""
    result = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, url, how], capture_output=True, text=True, timeout=120, check=True
    )
    report = json.loads(result.stdout)
    return report["outcome"], report["grew_kib"] / 1024


def test_gzip_bomb_keeps_memory_within_a_few_mib(fake_auth: FakeAuthAPI) -> None:
    fake_auth.set_fault("password", Fault.gzip_bomb(BOMB_DECODED_BYTES))

    outcome, operator_mib = _peak_rss_growth(fake_auth.base_url, "operator")
    plain_outcome, plain_mib = _peak_rss_growth(fake_auth.base_url, "plain-httpx")

    SUMMARY.append(
        f"compression bomb ({BOMB_DECODED_BYTES >> 20} MiB decoded): peak RSS grew {operator_mib:.1f} MiB "
        f"in the operator's client, {plain_mib:.1f} MiB in a plain httpx client"
    )
    assert outcome == "MalformedResponse"
    assert operator_mib < 16
    assert plain_outcome == str(BOMB_DECODED_BYTES), "the probe sees what an unbounded decoder does"
    assert plain_mib > 100


# ------------------------------------------------------------------ an overall deadline


async def test_a_server_that_drips_bytes_times_out_at_the_deadline(
    fake_auth: FakeAuthAPI, http: httpx.AsyncClient, source: LoginSource, observations: list[Observation]
) -> None:
    """Each byte arrives well within the client's 0.5 s read timeout; only the deadline (twice
    that) ends it, long before the last of the answer's hundreds of bytes."""
    api = AuthAPI(http, observe=lambda *seen: observations.append(seen), deadline=1.0)
    fake_auth.fail_next("password", Fault.drip(0.1))
    started = time.monotonic()

    with pytest.raises(TransientAuthError, match="in time") as caught:
        await login(api, source)

    took = time.monotonic() - started
    assert type(caught.value) is TransientAuthError
    assert 0.95 <= took < 5, f"gave up after {took:.1f}s"
    assert [outcome for _, outcome, _ in observations] == ["timeout"]


def test_the_operator_deadline_is_thirty_seconds() -> None:
    """docs/security.md states this value; a change to it must change that page too."""
    assert REQUEST_DEADLINE == 30
    page = " ".join((Path(__file__).parents[2] / "docs" / "security.md").read_text().split())
    assert "overall deadline of 30 s" in page


# ------------------------------------------------------------------ refresh answered with another 4xx


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 410, 422, 451])
async def test_any_other_4xx_on_refresh_falls_back_to_the_password(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource, status: int
) -> None:
    first = await login(api, source)
    assert first.refresh_token is not None
    fake_auth.fail_next("refresh", Fault.http_error(status))

    with pytest.raises(RefreshRejected, match=str(status)):
        await api.refresh(source.auth_url, first.refresh_token)


@pytest.mark.parametrize("status", [408, 425, 429])
async def test_timeout_too_early_and_rate_limit_on_refresh_are_transient(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource, status: int
) -> None:
    first = await login(api, source)
    assert first.refresh_token is not None
    fake_auth.fail_next("refresh", Fault.http_error(status, headers={"Retry-After": "7"}))

    with pytest.raises(TransientAuthError) as caught:
        await api.refresh(source.auth_url, first.refresh_token)

    assert type(caught.value) is TransientAuthError
    assert caught.value.retry_after == 7


@pytest.mark.parametrize("status", [408, 425, 429])
async def test_timeout_too_early_and_rate_limit_on_login_are_transient(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource, status: int
) -> None:
    fake_auth.fail_next("password", Fault.http_error(status))

    with pytest.raises(TransientAuthError) as caught:
        await login(api, source)

    assert type(caught.value) is TransientAuthError


async def test_a_hostile_retry_after_is_capped_at_a_day(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource
) -> None:
    fake_auth.fail_next("password", Fault.http_error(503, headers={"Retry-After": "9" * 400}))

    with pytest.raises(TransientAuthError) as caught:
        await login(api, source)

    assert caught.value.retry_after == 86400


# ------------------------------------------------------------------ odd 200 answers


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt_with_raw_payload(payload: bytes) -> str:
    """A JWT whose claims are exactly `payload`: for numbers json.dumps refuses to write."""
    header = _b64(b'{"alg": "HS256", "typ": "JWT"}')
    return f"{header}.{_b64(payload)}.{_b64(b'signature')}"


def _odd_answers(make_jwt: MakeJwt) -> dict[str, Fault]:
    now = time.time()
    good = make_jwt(exp=now + 3600)
    digits = "9" * 5000
    return dict(
        [
            ("exp-10e400", Fault.with_claims(exp=10**400)),
            ("exp-1e18", Fault.with_claims(exp=10**18)),
            ("exp-2100", Fault.with_claims(exp=4_102_444_800)),
            ("exp-text", Fault.with_claims(exp="soon")),
            ("exp-true", Fault.with_claims(exp=True)),
            ("expires-in-1e300", Fault.raw(f'{{"access_token": "{good}", "expires_in": 1e300}}')),
            ("expires-in-2-days", Fault.raw(f'{{"access_token": "{good}", "expires_in": 172800}}')),
            ("expires-in-infinity", Fault.raw(f'{{"access_token": "{good}", "expires_in": 1e999}}')),
            ("expires-in-5000-digits", Fault.raw(f'{{"access_token": "{good}", "expires_in": {digits}}}')),
            (
                "exp-5000-digits",
                Fault.raw(
                    json.dumps(
                        {
                            "access_token": _jwt_with_raw_payload(f'{{"exp":{digits}}}'.encode()),
                            "expires_in": 3600,
                        }
                    )
                ),
            ),
            (
                "surrogate-in-access-token",
                Fault.raw(f'{{"access_token": "{good[:20]}\\ud800{good[20:]}"}}'),
            ),
            (
                "surrogate-in-refresh-token",
                Fault.raw(f'{{"access_token": "{good}", "refresh_token": "ab\\udfffcd"}}'),
            ),
            ("space-in-refresh-token", Fault.raw(f'{{"access_token": "{good}", "refresh_token": "ab cd"}}')),
            ("newline-in-access-token", Fault.raw(f'{{"access_token": "{good}\\n"}}')),
            ("invalid-utf8", Fault.raw(b'{"access_token": "\xff\xfe"}')),
            ("json-nested-100000-deep", Fault.raw("[" * 100_000 + "]" * 100_000)),
            ("json-null", Fault.raw("null")),
            ("json-list", Fault.raw(f'["{good}"]')),
            ("empty-body", Fault.raw(b"")),
            (
                "claims-not-an-object",
                Fault.raw(json.dumps({"access_token": _jwt_with_raw_payload(b"[1, 2]")})),
            ),
        ]
    )


ODD_ANSWERS = [
    "exp-10e400",
    "exp-1e18",
    "exp-2100",
    "exp-text",
    "exp-true",
    "expires-in-1e300",
    "expires-in-2-days",
    "expires-in-infinity",
    "expires-in-5000-digits",
    "exp-5000-digits",
    "surrogate-in-access-token",
    "surrogate-in-refresh-token",
    "space-in-refresh-token",
    "newline-in-access-token",
    "invalid-utf8",
    "json-nested-100000-deep",
    "json-null",
    "json-list",
    "empty-body",
    "claims-not-an-object",
]


@pytest.mark.parametrize("what", ODD_ANSWERS)
async def test_odd_200_answers_are_malformed_never_untyped(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource, make_jwt: MakeJwt, what: str
) -> None:
    fake_auth.fail_next("password", _odd_answers(make_jwt)[what])

    try:
        token = await login(api, source)
    except MalformedResponse as error:
        assert isinstance(error, TransientAuthError), what
    else:
        pytest.fail(f"{what}: accepted as a token living {token.lifetime:.0f}s")


def test_every_odd_answer_is_tested() -> None:
    assert list(_odd_answers(lambda **_: "x.y.z")) == ODD_ANSWERS


async def test_a_subject_with_a_lone_surrogate_is_dropped_not_fatal(
    fake_auth: FakeAuthAPI, api: AuthAPI, source: LoginSource
) -> None:
    fake_auth.fail_next("password", Fault.with_claims(preferred_username="bot\ud800"))

    token = await login(api, source)

    assert token.subject is None
