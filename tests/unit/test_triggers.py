"""Why a credential gets a new token now: one named reason per situation, first match wins.

A table in the manner of cert-manager's trigger policies tests: each row is an observed state
and the reason the user would see in status and Events (or None: nothing to do).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from simacan_token_operator.model.tokens import TokenSet
from simacan_token_operator.reconcile.tokensecret import StoredSecret
from simacan_token_operator.reconcile.triggers import POLICIES, Observed, Policy, Trigger, why_reissue

OBTAINED = 1_700_000_000.0
EXPIRES = OBTAINED + 3600
REFRESH_AT = OBTAINED + 2400
ACCOUNT = "3f2a9c0d11e8b7a4"
LOGIN = "login-digest-1"
OURS = "digest-of-the-token-we-wrote"
OTHER = "digest-of-a-token-someone-else-wrote"
REQUEST = "2024-05-01T10:00:00Z"


def stored(
    *,
    digest: str = OURS,
    account: str | None = ACCOUNT,
    obtained_at: float = OBTAINED,
    jwt_expiry: float | None = EXPIRES,
    annotated_expiry: float | None = EXPIRES,
    readable: bool = True,
) -> StoredSecret:
    expires_at = min(e for e in (jwt_expiry, annotated_expiry, EXPIRES) if e is not None)
    token = TokenSet("header.payload.sig", None, obtained_at=obtained_at, expires_at=expires_at)
    return StoredSecret(
        token=token if readable else None,
        account=account,
        token_digest=digest,
        jwt_expiry=jwt_expiry,
        annotated_expiry=annotated_expiry,
    )


def healthy(**changes: Any) -> Observed:
    """A credential whose Secret holds the fresh token this process wrote, halfway to its refresh."""
    base = Observed(
        now=OBTAINED + 1200,
        secret_name="fleet-token",
        stored=stored(),
        account=ACCOUNT,
        login_key=LOGIN,
        last_login_key=LOGIN,
        written_digest=OURS,
        refresh_at=REFRESH_AT,
    )
    return replace(base, **changes)


EVERYTHING_WRONG: dict[str, Any] = {
    "stored": stored(account="someone-else", digest=OTHER, annotated_expiry=EXPIRES + 60),
    "last_login_key": "login-digest-0",
    "refresh_request": REQUEST,
    "now": EXPIRES + 60,
    "in_sync": False,
}
FORGED = stored(digest=OTHER, jwt_expiry=EXPIRES, annotated_expiry=EXPIRES + 3600)


@pytest.mark.parametrize(
    ("observed", "reason", "needs_new_token"),
    [
        pytest.param(healthy(), None, None, id="fresh-token-nothing-to-do"),
        pytest.param(healthy(now=REFRESH_AT - 1), None, None, id="just-before-refresh-time"),
        pytest.param(healthy(refresh_at=None), None, None, id="no-refresh-time-planned"),
        pytest.param(healthy(last_login_key=None, written_digest=None), None, None, id="after-a-restart"),
        pytest.param(
            healthy(stored=stored(digest=OTHER)), None, None, id="another-writers-valid-token-is-adopted"
        ),
        pytest.param(
            healthy(stored=stored(digest=OTHER, annotated_expiry=EXPIRES - 5)),
            None,
            None,
            id="expiry-annotation-earlier-than-exp-is-plausible",
        ),
        pytest.param(healthy(stored=None), "SecretMissing", True, id="secret-missing"),
        pytest.param(
            healthy(**{**EVERYTHING_WRONG, "stored": None}),
            "SecretMissing",
            True,
            id="secret-missing-beats-everything",
        ),
        pytest.param(healthy(stored=stored(readable=False)), "SecretInvalid", True, id="no-readable-token"),
        pytest.param(
            healthy(**{**EVERYTHING_WRONG, "stored": stored(readable=False)}),
            "SecretInvalid",
            True,
            id="unreadable-beats-the-rest",
        ),
        pytest.param(healthy(stored=stored(account="someone-else")), "AccountChanged", True, id="account"),
        pytest.param(
            healthy(stored=stored(account=None)), "AccountChanged", True, id="secret-names-no-account"
        ),
        pytest.param(healthy(**EVERYTHING_WRONG), "AccountChanged", True, id="account-beats-password"),
        pytest.param(
            healthy(last_login_key="login-digest-0"), "PasswordChanged", True, id="password-changed"
        ),
        pytest.param(
            healthy(last_login_key="login-digest-0", refresh_request=REQUEST, now=EXPIRES),
            "PasswordChanged",
            True,
            id="password-beats-request-and-expiry",
        ),
        pytest.param(healthy(stored=FORGED), "SecretModified", True, id="expiry-annotation-beyond-exp"),
        pytest.param(
            healthy(stored=FORGED, written_digest=None), "SecretModified", True, id="forged-after-a-restart"
        ),
        pytest.param(
            healthy(stored=stored(digest=OTHER, annotated_expiry=None)),
            "SecretModified",
            True,
            id="no-expiry-annotation",
        ),
        pytest.param(
            healthy(stored=stored(digest=OTHER, obtained_at=OBTAINED - 2 * 86400, jwt_expiry=EXPIRES)),
            "SecretModified",
            True,
            id="lifetime-beyond-the-sane-bound",
        ),
        pytest.param(
            healthy(stored=stored(digest=OTHER, obtained_at=OBTAINED + 1200 + 3600)),
            "SecretModified",
            True,
            id="obtained-in-the-future",
        ),
        pytest.param(
            healthy(stored=FORGED, now=REFRESH_AT, in_sync=False),
            "SecretModified",
            True,
            id="untrusted-beats-expiring",
        ),
        pytest.param(healthy(refresh_request=REQUEST), "RefreshRequested", True, id="refresh-requested"),
        pytest.param(
            healthy(refresh_request=REQUEST, now=EXPIRES), "RefreshRequested", True, id="request-beats-expiry"
        ),
        pytest.param(healthy(now=EXPIRES), "Expired", True, id="expired-at-exp"),
        pytest.param(healthy(now=EXPIRES + 3600), "Expired", True, id="expired-beats-expiring"),
        pytest.param(healthy(now=REFRESH_AT), "Expiring", True, id="expiring-at-refresh-time"),
        pytest.param(healthy(now=EXPIRES - 1), "Expiring", True, id="expiring-just-before-exp"),
        pytest.param(
            healthy(now=REFRESH_AT, in_sync=False), "Expiring", True, id="expiring-beats-an-edited-secret"
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
        pytest.param(healthy(stored=None), id="missing"),
        pytest.param(healthy(stored=stored(readable=False)), id="unreadable"),
        pytest.param(healthy(stored=FORGED), id="replaced"),
        pytest.param(healthy(in_sync=False), id="edited"),
    ],
)
def test_messages_about_the_secret_name_it(observed: Observed) -> None:
    trigger = why_reissue(observed)

    assert trigger is not None
    assert "fleet-token" in trigger.message


def test_refresh_request_message_shows_the_requested_time() -> None:
    trigger = why_reissue(healthy(refresh_request=REQUEST))

    assert trigger is not None
    assert REQUEST in trigger.message


def test_every_policy_is_quiet_for_a_healthy_credential() -> None:
    assert [policy(healthy()) for policy in POLICIES] == [None] * len(POLICIES)


def test_only_an_edited_secret_is_restored_without_a_new_token() -> None:
    everything_wrong = healthy(**{**EVERYTHING_WRONG, "stored": FORGED})

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
