"""Reading a token response: how long the token lives, and what a broken response looks like."""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from simacan_token_operator.model.tokens import (
    MAX_TOKEN_LIFETIME,
    TokenParseError,
    parse_token_response,
    stored_token,
)

if TYPE_CHECKING:
    from tests.unit.conftest import MakeJwt

SEED_RESPONSE: dict[str, Any] = json.loads((Path(__file__).parent / "seed_response.json").read_text())
"""The sample response published with Auth API 1.0 (tokens copied verbatim)."""
SEED_IAT = 1606730411
SEED_EXP = 1606734011
SEED_REFRESH_EXP = 1606816811
SEED_USERNAME = "api-demo-account@simacan.com"

NOW = 1_700_000_000.0


def response(access_token: str, **fields: Any) -> dict[str, Any]:
    return {"access_token": access_token, "token_type": "bearer", **fields}


def test_seed_sample_response_gives_a_one_hour_token() -> None:
    token = parse_token_response(SEED_RESPONSE, sent_at=SEED_IAT)

    assert token.lifetime == 3600
    assert token.obtained_at == SEED_IAT
    assert token.expires_at == SEED_EXP
    assert token.access_token == SEED_RESPONSE["access_token"]
    assert token.refresh_token == SEED_RESPONSE["refresh_token"]
    assert token.subject == SEED_USERNAME


def test_seed_refresh_token_is_usable_until_its_own_exp() -> None:
    token = parse_token_response(SEED_RESPONSE, sent_at=SEED_IAT)

    assert token.refresh_expires_at == SEED_REFRESH_EXP
    assert token.refreshable_at(SEED_REFRESH_EXP - 1)
    assert not token.refreshable_at(SEED_REFRESH_EXP)


def test_seed_token_received_today_is_rejected_as_already_expired() -> None:
    with pytest.raises(TokenParseError, match="already expired"):
        parse_token_response(SEED_RESPONSE, sent_at=NOW)


@pytest.mark.parametrize(
    ("exp_in", "expires_in", "lifetime"),
    [
        pytest.param(600, "3600", 600, id="exp-earlier"),
        pytest.param(3600, "600", 600, id="expires-in-earlier"),
        pytest.param(3600, "3600", 3600, id="both-agree"),
    ],
)
def test_expiry_is_the_earlier_of_exp_and_expires_in(
    make_jwt: MakeJwt, exp_in: int, expires_in: str, lifetime: int
) -> None:
    token = parse_token_response(response(make_jwt(exp=NOW + exp_in), expires_in=expires_in), sent_at=NOW)

    assert token.expires_at == NOW + lifetime


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        pytest.param("1800", 1800, id="string"),
        pytest.param(" 1800 ", 1800, id="string-with-spaces"),
        pytest.param(1800, 1800, id="int"),
        pytest.param(1800.5, 1800.5, id="float"),
        pytest.param("1800.5", 1800.5, id="float-string"),
    ],
)
def test_expires_in_is_accepted_as_string_int_or_float(
    make_jwt: MakeJwt, expires_in: object, lifetime: float
) -> None:
    token = parse_token_response(response(make_jwt(exp=NOW + 7200), expires_in=expires_in), sent_at=NOW)

    assert token.lifetime == lifetime


def test_exp_alone_is_enough(make_jwt: MakeJwt) -> None:
    token = parse_token_response(response(make_jwt(exp=NOW + 900)), sent_at=NOW)

    assert token.expires_at == NOW + 900


def test_expires_in_alone_is_enough(make_jwt: MakeJwt) -> None:
    token = parse_token_response(response(make_jwt(sub="x"), expires_in="900"), sent_at=NOW)

    assert token.expires_at == NOW + 900


@pytest.mark.parametrize(
    "expires_in",
    ["abc", "-5", "0", 0, -1, True, False, "nan", "inf", float("inf"), "", [], {}],
    ids=repr,
)
def test_invalid_expires_in_is_an_error(make_jwt: MakeJwt, expires_in: object) -> None:
    with pytest.raises(TokenParseError, match="expires_in"):
        parse_token_response(response(make_jwt(exp=NOW + 3600), expires_in=expires_in), sent_at=NOW)


def test_token_without_exp_or_expires_in_is_an_error(make_jwt: MakeJwt) -> None:
    with pytest.raises(TokenParseError, match="no exp claim"):
        parse_token_response(response(make_jwt(sub="x")), sent_at=NOW)


@pytest.mark.parametrize(
    "access_token",
    ["opaque-0123456789abcdef", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.bm90LWpzb24.c2ln"],
    ids=["opaque", "three-garbage-parts", "payload-not-json"],
)
def test_access_token_that_is_not_a_jwt_is_an_error(access_token: str) -> None:
    with pytest.raises(TokenParseError, match="not a JWT"):
        parse_token_response(response(access_token, expires_in="3600"), sent_at=NOW)


@pytest.mark.parametrize("token_type", ["mac", "", None, 1], ids=repr)
def test_token_type_other_than_bearer_is_an_error(make_jwt: MakeJwt, token_type: object) -> None:
    payload = response(make_jwt(exp=NOW + 3600), token_type=token_type)

    with pytest.raises(TokenParseError, match="token_type"):
        parse_token_response(payload, sent_at=NOW)


@pytest.mark.parametrize("token_type", ["bearer", "Bearer", "BEARER"])
def test_token_type_bearer_is_accepted_in_any_case(make_jwt: MakeJwt, token_type: str) -> None:
    payload = response(make_jwt(exp=NOW + 3600), token_type=token_type)

    assert parse_token_response(payload, sent_at=NOW).lifetime == 3600


def test_missing_token_type_means_bearer(make_jwt: MakeJwt) -> None:
    payload = {"access_token": make_jwt(exp=NOW + 3600)}

    assert parse_token_response(payload, sent_at=NOW).lifetime == 3600


@pytest.mark.parametrize("exp_in", [0, -1, -3600], ids=["expires-on-arrival", "just-expired", "hour-old"])
def test_token_already_expired_on_arrival_is_an_error(make_jwt: MakeJwt, exp_in: int) -> None:
    with pytest.raises(TokenParseError, match="already expired"):
        parse_token_response(response(make_jwt(exp=NOW + exp_in), expires_in="3600"), sent_at=NOW)


@pytest.mark.parametrize(
    ("claims", "subject"),
    [
        pytest.param({"preferred_username": "bot@example.com"}, "bot@example.com", id="present"),
        pytest.param({}, None, id="absent"),
        pytest.param({"preferred_username": 42}, None, id="not-a-string"),
    ],
)
def test_subject_comes_from_preferred_username(
    make_jwt: MakeJwt, claims: dict[str, Any], subject: str | None
) -> None:
    token = parse_token_response(response(make_jwt(exp=NOW + 3600, **claims)), sent_at=NOW)

    assert token.subject == subject


def test_response_without_refresh_token_cannot_be_refreshed(make_jwt: MakeJwt) -> None:
    token = parse_token_response(response(make_jwt(exp=NOW + 3600)), sent_at=NOW)

    assert token.refresh_token is None
    assert not token.refreshable_at(NOW)


def test_opaque_refresh_token_is_kept_and_refreshable_without_known_expiry(make_jwt: MakeJwt) -> None:
    token = parse_token_response(
        response(make_jwt(exp=NOW + 3600), refresh_token="opaque-refresh"), sent_at=NOW
    )

    assert token.refresh_expires_at is None
    assert token.refreshable_at(NOW + 10 * 86400)


def test_repr_of_a_token_set_never_shows_the_tokens() -> None:
    token = parse_token_response(SEED_RESPONSE, sent_at=SEED_IAT)

    shown = repr(token) + str(token)

    assert SEED_RESPONSE["access_token"] not in shown
    assert SEED_RESPONSE["refresh_token"] not in shown
    for part in SEED_RESPONSE["access_token"].split("."):
        assert part not in shown


def test_stored_token_starts_its_life_at_the_refresh_time_written_with_it(make_jwt: MakeJwt) -> None:
    token = stored_token(make_jwt(iat=NOW - 100, exp=NOW + 3500), obtained_at=NOW - 50, now=NOW)

    assert (token.obtained_at, token.expires_at, token.refresh_token) == (NOW - 50, NOW + 3500, None)


def test_stored_token_without_a_refresh_time_starts_at_iat(make_jwt: MakeJwt) -> None:
    token = stored_token(make_jwt(iat=NOW - 100, exp=NOW + 3500), obtained_at=None, now=NOW)

    assert token.obtained_at == NOW - 100


def test_stored_token_without_exp_is_unreadable(make_jwt: MakeJwt) -> None:
    with pytest.raises(TokenParseError):
        stored_token(make_jwt(iat=NOW), obtained_at=NOW, now=NOW)


def _bad_responses(make_jwt: MakeJwt) -> list[tuple[object, list[str]]]:
    """Broken responses that still carry token text, paired with the secrets each one holds."""
    no_exp = make_jwt(sub="secret-subject", jti="no-exp-jti")
    expired = make_jwt(exp=NOW - 10, jti="expired-jti")
    good = make_jwt(exp=NOW + 3600, jti="good-jti")
    opaque = "opaque-access-token-Zk81mQ"
    refresh = "opaque-refresh-token-Pq27xW"
    return [
        (response(opaque, refresh_token=refresh, expires_in="3600"), [opaque, refresh]),
        (response(no_exp, refresh_token=refresh), [no_exp, refresh]),
        (response(expired, refresh_token=refresh, expires_in="3600"), [expired, refresh]),
        (response(good, refresh_token=refresh, expires_in="soon"), [good, refresh]),
        (response(good, refresh_token=refresh, token_type=good), [good, refresh]),
        (response(good, refresh_token={"token": refresh}), [good, refresh]),
        (response("", refresh_token=refresh), [refresh]),
        ([good, refresh], [good, refresh]),
    ]


def test_parse_errors_never_contain_token_text(make_jwt: MakeJwt) -> None:
    cases = _bad_responses(make_jwt)
    for payload, secrets in cases:
        with pytest.raises(TokenParseError) as caught:
            parse_token_response(payload, sent_at=NOW)
        shown = "".join(traceback.format_exception(caught.value)) + repr(caught.value)
        for secret in secrets:
            assert secret not in shown, f"{caught.value} leaks a token"


# ------------------------------------------------------------------ a sane upper bound on lifetime


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"exp": NOW + MAX_TOKEN_LIFETIME + 1}, id="exp-a-day-and-a-second"),
        pytest.param({"exp": 10**18}, id="exp-1e18"),
        pytest.param({"exp": 4_102_444_800}, id="exp-in-2100"),
    ],
)
def test_an_exp_beyond_a_day_is_an_error(make_jwt: MakeJwt, fields: dict[str, Any]) -> None:
    with pytest.raises(TokenParseError, match="longer than 24 hours"):
        parse_token_response(response(make_jwt(**fields)), sent_at=NOW)


@pytest.mark.parametrize("expires_in", [MAX_TOKEN_LIFETIME + 1, 1e300, "1e300", 10**30], ids=repr)
def test_an_expires_in_beyond_a_day_is_an_error_even_with_a_short_exp(
    make_jwt: MakeJwt, expires_in: object
) -> None:
    with pytest.raises(TokenParseError, match="longer than 24 hours"):
        parse_token_response(response(make_jwt(exp=NOW + 3600), expires_in=expires_in), sent_at=NOW)


def test_a_lifetime_of_exactly_a_day_is_accepted(make_jwt: MakeJwt) -> None:
    token = parse_token_response(
        response(make_jwt(exp=NOW + MAX_TOKEN_LIFETIME), expires_in=MAX_TOKEN_LIFETIME), sent_at=NOW
    )

    assert token.lifetime == MAX_TOKEN_LIFETIME


@pytest.mark.parametrize("exp", [10**400, "soon", True, [], {"at": 1}, float("nan")], ids=repr)
def test_an_exp_that_is_not_a_usable_number_is_an_error(make_jwt: MakeJwt, exp: object) -> None:
    with pytest.raises(TokenParseError, match="exp claim is not a number"):
        parse_token_response(response(make_jwt(exp=exp), expires_in="3600"), sent_at=NOW)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t[:10] + "\ud800" + t[10:], id="lone-surrogate"),
        pytest.param(lambda t: t + "\n", id="trailing-newline"),
        pytest.param(lambda t: t[:10] + " " + t[10:], id="space"),
        pytest.param(lambda t: t[:10] + "é" + t[10:], id="non-ascii"),
    ],
)
def test_an_access_token_with_characters_no_token_has_is_an_error(
    make_jwt: MakeJwt, mangle: Callable[[str], str]
) -> None:
    with pytest.raises(TokenParseError, match="not a JWT"):
        parse_token_response(response(mangle(make_jwt(exp=NOW + 3600))), sent_at=NOW)


@pytest.mark.parametrize("refresh", ["ab\ud800cd", "ab cd", "ab\r\nSet-Cookie: x", "réfresh"], ids=repr)
def test_a_refresh_token_with_characters_no_token_has_is_an_error(make_jwt: MakeJwt, refresh: str) -> None:
    with pytest.raises(TokenParseError, match="refresh_token"):
        parse_token_response(response(make_jwt(exp=NOW + 3600), refresh_token=refresh), sent_at=NOW)


def test_a_refresh_token_with_an_absurd_exp_is_kept_with_an_unknown_expiry(make_jwt: MakeJwt) -> None:
    token = parse_token_response(
        response(make_jwt(exp=NOW + 3600), refresh_token=make_jwt(exp=10**400)), sent_at=NOW
    )

    assert token.refresh_expires_at is None


@pytest.mark.parametrize(
    "subject", ["bot\ud800", "bot\nname", "x" * 300], ids=["surrogate", "newline", "long"]
)
def test_a_subject_status_cannot_carry_is_dropped(make_jwt: MakeJwt, subject: str) -> None:
    token = parse_token_response(response(make_jwt(exp=NOW + 3600, preferred_username=subject)), sent_at=NOW)

    assert token.subject is None


def test_a_stored_token_claiming_more_than_a_day_from_now_is_unusable(make_jwt: MakeJwt) -> None:
    with pytest.raises(TokenParseError, match="longer than"):
        stored_token(make_jwt(exp=4_102_444_800), obtained_at=None, now=NOW)


def test_a_stored_token_claiming_more_than_a_day_from_its_start_is_unusable(make_jwt: MakeJwt) -> None:
    with pytest.raises(TokenParseError, match="longer than"):
        stored_token(make_jwt(iat=NOW - 2 * 86400, exp=NOW + 3600), obtained_at=None, now=NOW)


def test_a_stored_token_with_an_absurd_exp_is_unusable(make_jwt: MakeJwt) -> None:
    with pytest.raises(TokenParseError):
        stored_token(make_jwt(exp=10**400), obtained_at=NOW, now=NOW)


def test_a_stored_one_hour_token_is_usable(make_jwt: MakeJwt) -> None:
    token = stored_token(make_jwt(iat=NOW - 60, exp=NOW + 3540), obtained_at=NOW - 60, now=NOW)

    assert token.lifetime == 3600
