"""Why a credential gets a new token now: one named reason per situation, first match wins.

A table in the manner of cert-manager's trigger policies tests: each row is an observed state
and the reason the user would see in status and Events (or None: nothing to do).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from simacan_token_operator.tokens import TokenSet
from simacan_token_operator.triggers import POLICIES, Observed, Policy, Trigger, why_reissue

OBTAINED = 1_700_000_000.0
EXPIRES = OBTAINED + 3600
REFRESH_AT = OBTAINED + 2400
ACCOUNT = "3f2a9c0d11e8b7a4"


def token(expires_at: float = EXPIRES) -> TokenSet:
    return TokenSet(access_token="header.payload.sig", refresh_token=None, obtained_at=OBTAINED,
                    expires_at=expires_at)


def healthy(**changes: Any) -> Observed:
    """A credential whose Secret holds a fresh token, halfway to its refresh."""
    base = Observed(
        now=OBTAINED + 1200,
        secret_name="fleet-token",
        secret_exists=True,
        stored=token(),
        stored_account=ACCOUNT,
        account=ACCOUNT,
        refresh_at=REFRESH_AT,
    )
    return replace(base, **changes)


EVERYTHING_WRONG: dict[str, Any] = {
    "stored_account": "someone-else",
    "password_changed": True,
    "refresh_request": "2024-05-01T10:00:00Z",
    "now": EXPIRES + 60,
    "token_replaced": True,
    "in_sync": False,
}


@pytest.mark.parametrize(
    ("observed", "reason", "needs_new_token"),
    [
        pytest.param(healthy(), None, None, id="fresh-token-nothing-to-do"),
        pytest.param(healthy(now=REFRESH_AT - 1), None, None, id="just-before-refresh-time"),
        pytest.param(healthy(refresh_at=None), None, None, id="no-refresh-time-planned"),
        pytest.param(healthy(secret_exists=False, stored=None), "SecretMissing", True, id="secret-missing"),
        pytest.param(
            healthy(secret_exists=False, stored=None, **EVERYTHING_WRONG), "SecretMissing", True,
            id="secret-missing-beats-everything",
        ),
        pytest.param(healthy(stored=None), "SecretInvalid", True, id="secret-holds-no-readable-token"),
        pytest.param(
            healthy(stored=None, **EVERYTHING_WRONG), "SecretInvalid", True, id="unreadable-beats-the-rest"
        ),
        pytest.param(healthy(stored_account="someone-else"), "AccountChanged", True, id="account-changed"),
        pytest.param(healthy(stored_account=None), "AccountChanged", True, id="secret-names-no-account"),
        pytest.param(healthy(**EVERYTHING_WRONG), "AccountChanged", True, id="account-beats-password"),
        pytest.param(healthy(password_changed=True), "PasswordChanged", True, id="password-changed"),
        pytest.param(
            healthy(password_changed=True, refresh_request="2024-05-01T10:00:00Z", now=EXPIRES),
            "PasswordChanged", True, id="password-beats-request-and-expiry",
        ),
        pytest.param(
            healthy(refresh_request="2024-05-01T10:00:00Z"), "RefreshRequested", True, id="refresh-requested"
        ),
        pytest.param(
            healthy(refresh_request="2024-05-01T10:00:00Z", now=EXPIRES), "RefreshRequested", True,
            id="request-beats-expiry",
        ),
        pytest.param(healthy(now=EXPIRES), "Expired", True, id="expired-at-exp"),
        pytest.param(healthy(now=EXPIRES + 3600), "Expired", True, id="expired-beats-expiring"),
        pytest.param(healthy(now=REFRESH_AT), "Expiring", True, id="expiring-at-refresh-time"),
        pytest.param(healthy(now=EXPIRES - 1), "Expiring", True, id="expiring-just-before-exp"),
        pytest.param(
            healthy(now=REFRESH_AT, token_replaced=True, in_sync=False), "Expiring", True,
            id="expiring-beats-tampering",
        ),
        pytest.param(healthy(token_replaced=True), "SecretModified", True, id="token-replaced-by-someone"),
        pytest.param(
            healthy(token_replaced=True, in_sync=False), "SecretModified", True,
            id="token-replaced-beats-out-of-sync",
        ),
        pytest.param(healthy(in_sync=False), "SecretModified", False, id="out-of-sync-rewrites-same-token"),
    ],
)
def test_why_reissue(observed: Observed, reason: str | None, needs_new_token: bool | None) -> None:
    trigger = why_reissue(observed)

    if reason is None:
        assert trigger is None
    else:
        assert trigger is not None
        assert (trigger.reason, trigger.needs_new_token) == (reason, needs_new_token)
        assert trigger.message


@pytest.mark.parametrize(
    "observed",
    [
        pytest.param(healthy(secret_exists=False, stored=None), id="missing"),
        pytest.param(healthy(stored=None), id="unreadable"),
        pytest.param(healthy(token_replaced=True), id="replaced"),
        pytest.param(healthy(in_sync=False), id="edited"),
    ],
)
def test_messages_about_the_secret_name_it(observed: Observed) -> None:
    trigger = why_reissue(observed)

    assert trigger is not None
    assert "fleet-token" in trigger.message


def test_refresh_request_message_shows_the_requested_time() -> None:
    trigger = why_reissue(healthy(refresh_request="2024-05-01T10:00:00Z"))

    assert trigger is not None
    assert "2024-05-01T10:00:00Z" in trigger.message


def test_every_policy_is_quiet_for_a_healthy_credential() -> None:
    assert [policy(healthy()) for policy in POLICIES] == [None] * len(POLICIES)


def test_only_an_edited_secret_is_restored_without_a_new_token() -> None:
    everything_wrong = healthy(secret_exists=False, stored=None, **EVERYTHING_WRONG)

    keeping_the_token = [
        policy.__name__
        for policy in POLICIES
        if (trigger := policy(everything_wrong)) is not None and not trigger.needs_new_token
    ]

    assert keeping_the_token == ["out_of_sync"]


def test_first_matching_policy_wins_in_a_custom_order() -> None:
    def always(reason: str) -> Policy:
        return lambda observed: Trigger(reason, reason)

    assert why_reissue(healthy(), [lambda o: None, always("A"), always("B")]) == Trigger("A", "A")
    assert why_reissue(healthy(), []) is None
