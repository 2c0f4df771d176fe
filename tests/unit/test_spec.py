"""What a SimacanCredential asks for, and where the operator refuses to send a password."""

from __future__ import annotations

from typing import Any

import pytest

from simacan_token_operator.model.spec import (
    PRODUCTION_URL,
    STAGING_URL,
    AuthURLNotAllowed,
    AuthURLPolicy,
    LoginSource,
    SpecError,
    parse_spec,
)

PROD_HOST = "auth-service.services.simacan.com"
STAGING_HOST = "auth-service-stg.services.simacan.com"
REF_NAME = "spec.credentialsSecretRef.name"


def spec(**fields: Any) -> dict[str, Any]:
    return {"credentialsSecretRef": {"name": "login"}, **fields}


def test_minimal_spec_gets_the_documented_defaults() -> None:
    parsed = parse_spec("fleet", "logistics", spec())

    assert parsed.name == "fleet"
    assert parsed.namespace == "logistics"
    assert parsed.credentials_secret == "login"
    assert (parsed.username_key, parsed.password_key) == ("username", "password")
    assert parsed.auth_url == PRODUCTION_URL
    assert parsed.target_secret == "fleet"
    assert (dict(parsed.labels), dict(parsed.annotations)) == ({}, {})
    assert parsed.refresh_before is None
    assert parsed.suspend is False


def test_spec_fields_override_the_defaults() -> None:
    parsed = parse_spec(
        "fleet",
        "logistics",
        {
            "credentialsSecretRef": {"name": "login", "usernameKey": "user", "passwordKey": "pass"},
            "authURL": STAGING_URL,
            "secretName": "fleet-token",
            "secretTemplate": {"labels": {"team": "routing"}, "annotations": {"owner": "ops"}},
            "refreshBefore": "15m",
            "suspend": True,
        },
    )

    assert (parsed.username_key, parsed.password_key) == ("user", "pass")
    assert parsed.auth_url == STAGING_URL
    assert parsed.target_secret == "fleet-token"
    assert dict(parsed.labels) == {"team": "routing"}
    assert dict(parsed.annotations) == {"owner": "ops"}
    assert parsed.refresh_before == 900
    assert parsed.suspend is True


@pytest.mark.parametrize("url", [f"{PRODUCTION_URL}/", f"{PRODUCTION_URL}//"])
def test_auth_url_trailing_slash_is_stripped(url: str) -> None:
    assert parse_spec("fleet", "ns", spec(authURL=url)).auth_url == PRODUCTION_URL


@pytest.mark.parametrize(
    ("refresh_before", "seconds"),
    [("15m", 900.0), ("1h30m", 5400.0), ("90s", 90.0), ("1.5h", 5400.0)],
)
def test_refresh_before_is_a_kubernetes_duration(refresh_before: str, seconds: float) -> None:
    assert parse_spec("fleet", "ns", spec(refreshBefore=refresh_before)).refresh_before == seconds


@pytest.mark.parametrize("refresh_before", ["15", "soon", "-5m", "0s", "0m", 900])
def test_bad_refresh_before_is_an_error_naming_the_field(refresh_before: object) -> None:
    with pytest.raises(SpecError, match=r"spec\.refreshBefore"):
        parse_spec("fleet", "ns", spec(refreshBefore=refresh_before))


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        pytest.param({"credentialsSecretRef": None}, REF_NAME, id="no-ref"),
        pytest.param({"credentialsSecretRef": {}}, REF_NAME, id="no-name"),
        pytest.param({"credentialsSecretRef": {"name": ""}}, REF_NAME, id="empty-name"),
        pytest.param({"secretTemplate": ["a"]}, "spec.secretTemplate", id="template-not-object"),
        pytest.param(
            {"secretTemplate": {"labels": {"a": 1}}}, "spec.secretTemplate.labels", id="label-not-string"
        ),
        pytest.param(
            {"secretTemplate": {"annotations": "x"}},
            "spec.secretTemplate.annotations",
            id="annotations-not-map",
        ),
        pytest.param({"authURL": 42}, "spec.authURL", id="auth-url-not-string"),
    ],
)
def test_invalid_spec_errors_name_the_field(fields: dict[str, Any], field_name: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec("fleet", "ns", {**spec(), **fields})

    assert field_name in caught.value.message
    assert caught.value.reason == "InvalidSpec"


@pytest.mark.parametrize(
    ("policy", "url"),
    [
        pytest.param(AuthURLPolicy(), PRODUCTION_URL, id="production"),
        pytest.param(AuthURLPolicy(), STAGING_URL, id="staging"),
        pytest.param(AuthURLPolicy(), "https://AUTH-SERVICE.Services.Simacan.COM/api/v1", id="host-any-case"),
        pytest.param(AuthURLPolicy(), f"HTTPS://{PROD_HOST}/api/v1", id="scheme-case-insensitive"),
        pytest.param(AuthURLPolicy(), f"https://{PROD_HOST}:443/api/v1", id="explicit-port"),
        pytest.param(
            AuthURLPolicy(frozenset({"auth.example.com"})),
            "https://auth.example.com/api/v1",
            id="added-host",
        ),
    ],
)
def test_auth_url_accepted(policy: AuthURLPolicy, url: str) -> None:
    policy.check_auth_url(url)


@pytest.mark.parametrize(
    ("policy", "url", "complaint"),
    [
        pytest.param(AuthURLPolicy(), f"http://{PROD_HOST}/api/v1", "https://", id="http-not-allowed"),
        pytest.param(AuthURLPolicy(), f"ftp://{PROD_HOST}/api/v1", "https://", id="ftp"),
        pytest.param(AuthURLPolicy(), f"{PROD_HOST}/api/v1", "https://", id="no-scheme"),
        pytest.param(
            AuthURLPolicy(frozenset({"127.0.0.1:8080"})),
            "http://127.0.0.1:8080/api/v1",
            "https://",
            id="http-even-to-an-allowed-host-port",
        ),
        pytest.param(AuthURLPolicy(), "https://auth.evil.example/api/v1", "not allowed", id="foreign-host"),
        pytest.param(
            AuthURLPolicy(), f"https://{PROD_HOST}.evil.example/api/v1", "not allowed", id="suffix-trick"
        ),
        pytest.param(AuthURLPolicy(), f"https://{PROD_HOST}@evil.example/api/v1", "user info", id="at-trick"),
        pytest.param(AuthURLPolicy(), f"https://bot:hunter2@{PROD_HOST}/api/v1", "user info", id="userinfo"),
        pytest.param(AuthURLPolicy(), f"https://bot@{PROD_HOST}/api/v1", "user info", id="username-only"),
        pytest.param(AuthURLPolicy(), f"https://{PROD_HOST}/api/v1?next=x", "query", id="query"),
        pytest.param(AuthURLPolicy(), f"https://{PROD_HOST}/api/v1#frag", "fragment", id="fragment"),
    ],
)
def test_auth_url_refused(policy: AuthURLPolicy, url: str, complaint: str) -> None:
    with pytest.raises(AuthURLNotAllowed, match=complaint) as caught:
        policy.check_auth_url(url)

    assert caught.value.reason == "AuthURLNotAllowed"
    assert isinstance(caught.value, SpecError)
    assert "hunter2" not in caught.value.message


def test_refused_host_error_names_the_allowed_hosts_and_the_flag() -> None:
    with pytest.raises(AuthURLNotAllowed) as caught:
        AuthURLPolicy().check_auth_url("https://auth.evil.example/api/v1")

    message = caught.value.message
    assert "auth.evil.example" in message
    assert PROD_HOST in message and STAGING_HOST in message
    assert "--allowed-auth-host" in message


def test_default_policy_allows_exactly_production_and_staging() -> None:
    assert AuthURLPolicy().allowed_hosts == {PROD_HOST, STAGING_HOST}


def test_login_source_key_changes_when_the_password_changes() -> None:
    old = LoginSource(PRODUCTION_URL, "bot@example.com", "old-password")
    new = LoginSource(PRODUCTION_URL, "bot@example.com", "new-password")

    assert old.key != new.key
    assert old.key == LoginSource(PRODUCTION_URL, "bot@example.com", "old-password").key


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(LoginSource(STAGING_URL, "bot@example.com", "pw"), id="other-url"),
        pytest.param(LoginSource(PRODUCTION_URL, "other@example.com", "pw"), id="other-user"),
    ],
)
def test_login_source_key_and_account_differ_per_account(other: LoginSource) -> None:
    base = LoginSource(PRODUCTION_URL, "bot@example.com", "pw")

    assert base.key != other.key
    assert base.account != other.account


def test_account_digest_ignores_the_password() -> None:
    """A password rotation is not an account change: the stored token stays valid for the account."""
    old = LoginSource(PRODUCTION_URL, "bot@example.com", "old-password")
    new = LoginSource(PRODUCTION_URL, "bot@example.com", "new-password")

    assert old.account == new.account


def test_login_source_never_shows_the_password() -> None:
    source = LoginSource(PRODUCTION_URL, "bot@example.com", "s3cret-Xy9")

    assert "s3cret-Xy9" not in repr(source) + str(source)
    assert "s3cret-Xy9" not in source.key + source.account
    assert "bot@example.com" in repr(source)


@pytest.mark.parametrize(
    ("policy", "url", "allowed"),
    [
        pytest.param(
            AuthURLPolicy(), f"https://{PROD_HOST}:9/api/v1", False, id="other-port-on-allowed-host"
        ),
        pytest.param(AuthURLPolicy(), f"https://{PROD_HOST}:443/api/v1", True, id="explicit-443"),
        pytest.param(
            AuthURLPolicy(frozenset({"127.0.0.1:8443"})), "https://127.0.0.1:8443/a", True, id="host-port"
        ),
        pytest.param(
            AuthURLPolicy(frozenset({"127.0.0.1:8443"})), "https://127.0.0.1:9443/a", False, id="other-port"
        ),
        pytest.param(
            AuthURLPolicy(frozenset({"127.0.0.1:8443"})), "https://127.0.0.1/a", False, id="443-not-named"
        ),
    ],
)
def test_auth_url_port_must_be_443_or_named(policy: AuthURLPolicy, url: str, allowed: bool) -> None:
    if allowed:
        policy.check_auth_url(url)
    else:
        with pytest.raises(AuthURLNotAllowed, match="not allowed"):
            policy.check_auth_url(url)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"https://[{PROD_HOST}]/api/v1", id="bracketed-name"),
        pytest.param(f"https://{PROD_HOST}:443:evil.example/", id="two-ports"),
        pytest.param("https:///api/v1", id="no-host"),
    ],
)
def test_unparsable_auth_url_is_invalid_spec_not_a_crash(url: str) -> None:
    with pytest.raises(SpecError, match="authURL") as raised:
        AuthURLPolicy().check_auth_url(url)
    assert raised.value.reason == "InvalidSpec"
