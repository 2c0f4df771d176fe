"""Why a credential needs a new token now: one named reason per case, decided by pure functions.

Like cert-manager's renewal policies: each policy looks at the observed state and returns a
Trigger (reason and message, shown in status and Events) or None; the first one wins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .tokens import TokenSet


@dataclass(frozen=True)
class Trigger:
    reason: str
    message: str
    needs_new_token: bool = True
    """False when the token we hold is fine and only the Secret must be written again."""


@dataclass(frozen=True)
class Observed:
    now: float
    secret_name: str
    secret_exists: bool
    stored: TokenSet | None
    stored_account: str | None
    account: str
    refresh_at: float | None
    password_changed: bool = False
    refresh_request: str | None = None
    """The annotation's value when it differs from the last request handled."""
    token_replaced: bool = False
    """The Secret's token differs from the one this process last wrote."""
    in_sync: bool = True


Policy = Callable[[Observed], Trigger | None]


def secret_missing(o: Observed) -> Trigger | None:
    if not o.secret_exists:
        return Trigger("SecretMissing", f"Secret {o.secret_name} does not exist; issuing a token")
    return None


def token_unreadable(o: Observed) -> Trigger | None:
    if o.stored is None:
        return Trigger("SecretInvalid", f"Secret {o.secret_name} holds no readable token; issuing a new one")
    return None


def account_changed(o: Observed) -> Trigger | None:
    if o.stored_account != o.account:
        return Trigger("AccountChanged", "authURL or username changed; logging in as the new account")
    return None


def password_changed(o: Observed) -> Trigger | None:
    if o.password_changed:
        return Trigger("PasswordChanged", "the credentials Secret changed; logging in with the new password")
    return None


def refresh_requested(o: Observed) -> Trigger | None:
    if o.refresh_request is not None:
        return Trigger("RefreshRequested", f"refresh requested at {o.refresh_request}")
    return None


def expired(o: Observed) -> Trigger | None:
    if o.stored is not None and o.now >= o.stored.expires_at:
        return Trigger("Expired", "the token in the Secret has expired")
    return None


def expiring(o: Observed) -> Trigger | None:
    if o.refresh_at is not None and o.now >= o.refresh_at:
        return Trigger("Expiring", "the token is due for refresh")
    return None


def token_replaced(o: Observed) -> Trigger | None:
    if o.token_replaced:
        return Trigger("SecretModified", f"the token in Secret {o.secret_name} was replaced; restoring it")
    return None


def out_of_sync(o: Observed) -> Trigger | None:
    if not o.in_sync:
        return Trigger(
            "SecretModified", f"Secret {o.secret_name} was edited; restoring it", needs_new_token=False
        )
    return None


POLICIES: Sequence[Policy] = (
    secret_missing,
    token_unreadable,
    account_changed,
    password_changed,
    refresh_requested,
    expired,
    expiring,
    token_replaced,
    out_of_sync,
)


def why_reissue(observed: Observed, policies: Sequence[Policy] = POLICIES) -> Trigger | None:
    for policy in policies:
        trigger = policy(observed)
        if trigger is not None:
            return trigger
    return None
