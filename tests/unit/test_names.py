"""One DNS-1123 rule: the spec parser and the Kubernetes client accept exactly the same names."""

from __future__ import annotations

import pytest

from simacan_token_operator.kube.client import InvalidName, checked_name
from simacan_token_operator.model.names import is_dns_subdomain
from simacan_token_operator.model.spec import SpecError, parse_spec

VALID = ["a", "fleet-api", "fleet-api.token-1", "0", "a" * 63 + "." + "b" * 63, "x" * 253]
INVALID = [
    "",
    "UPPER",
    "-leading",
    "trailing-",
    "a..b",
    ".a",
    "a.",
    "a/b",
    "../../other-ns/secrets/x",
    "%2e%2e",
    "with space",
    "x" * 254,
    "ümlaut",
    "a_b",
]


@pytest.mark.parametrize("name", VALID)
def test_dns_subdomains_pass(name: str) -> None:
    assert is_dns_subdomain(name)


@pytest.mark.parametrize("name", INVALID)
def test_other_names_fail(name: str) -> None:
    assert not is_dns_subdomain(name)


@pytest.mark.parametrize("value", [None, 7, b"fleet-api", ["fleet-api"]], ids=repr)
def test_a_name_that_is_not_a_string_fails(value: object) -> None:
    assert not is_dns_subdomain(value)


def _spec_accepts(name: str) -> bool:
    try:
        parse_spec("fleet", "logistics", {"credentialsSecretRef": {"name": "login"}, "secretName": name})
    except SpecError:
        return False
    return True


def _client_accepts(name: str) -> bool:
    try:
        checked_name("Secret", name)
    except InvalidName:
        return False
    return True


@pytest.mark.parametrize("name", [n for n in VALID + INVALID if n])  # "" means "the default" in a spec
def test_the_spec_parser_and_the_client_agree(name: str) -> None:
    assert _spec_accepts(name) == _client_accepts(name) == is_dns_subdomain(name)
