"""Why a credential needs a new token now: every reason, decided by pure functions in one place.

Like cert-manager's renewal policies, each policy looks at the gathered state (`Observed`) and
returns a Trigger (a named reason and a message, shown in status and Events) or None; the first
one wins. What counts as "the password changed" or "someone replaced the token" is decided here
from the raw facts, not computed by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from simacan_token_operator.model import reasons
from simacan_token_operator.model.tokens import MAX_TOKEN_LIFETIME, TokenSet
from simacan_token_operator.reconcile.tokensecret import StoredSecret, digest

CLOCK_SKEW_SECONDS = 60.0
"""How far in the future a stored refreshed-at may lie before the token is distrusted."""


@dataclass(frozen=True)
class Trigger:
    reason: str
    message: str
    needs_new_token: bool = True
    """False when the token we hold is fine and only the Secret must be written again."""
    quiet: bool = False
    """Replacing another writer's valid token with the account's newer one (a second operator's,
    or a tenant's plausible one): no Event, and Ready stays True while the restore backs off."""


@dataclass(frozen=True)
class Observed:
    """All one decision needs: the Secrets, the memory of earlier passes, the clock."""

    now: float
    secret_name: str
    stored: StoredSecret | None
    """The owned token Secret as read back; None when it does not exist."""
    account: str
    """Digest of auth URL and username the spec names now."""
    login_key: str
    """Digest of auth URL, username and password read now."""
    last_login_key: str | None
    """The login the previous pass used; None after a start."""
    written_digest: str | None
    """Digest of the token this process last wrote or adopted; None after a start."""
    refresh_at: float | None
    """When the stored token is due, by its times and the spec's refreshBefore."""
    pool_token: TokenSet | None = None
    """The token the pool last obtained for this login; None before its first login or refresh."""
    refresh_request: str | None = None
    """The refresh-requested-at annotation's value when it differs from the last request handled."""
    in_sync: bool = True
    """Whether the Secret's data, type, our labels, annotations and owner are as we would write them."""


Policy = Callable[[Observed], Trigger | None]


def secret_missing(o: Observed) -> Trigger | None:
    if o.stored is None:
        return Trigger(reasons.SECRET_MISSING, f"Secret {o.secret_name} does not exist; issuing a token")
    return None


def token_unreadable(o: Observed) -> Trigger | None:
    if o.stored is not None and o.stored.token is None:
        return Trigger(
            reasons.SECRET_INVALID, f"Secret {o.secret_name} holds no readable token; issuing a new one"
        )
    return None


def account_changed(o: Observed) -> Trigger | None:
    if o.stored is not None and o.stored.account != o.account:
        return Trigger(reasons.ACCOUNT_CHANGED, "authURL or username changed; logging in as the new account")
    return None


def password_changed(o: Observed) -> Trigger | None:
    if o.last_login_key is not None and o.last_login_key != o.login_key:
        return Trigger(
            reasons.PASSWORD_CHANGED, "the credentials Secret changed; logging in with the new password"
        )
    return None


def token_untrusted(o: Observed) -> Trigger | None:
    """A token is adopted only if its annotations tell a story it could have been issued with.

    Its expiry annotation may not claim more than the JWT's own `exp`, its lifetime must be
    sane, and it cannot have been obtained in the future. Once the pool holds a token for the
    login, a token that expires before the pool's is replaced by it (no login needed), so a
    tenant's self-made or older token never decides when the account logs in. Another writer's
    token that passes and lives at least as long (a second operator) is adopted instead of
    replaced: writers converge on the latest token instead of fighting.
    """
    stored = o.stored
    if stored is None or stored.token is None or stored.token_digest == o.written_digest:
        return None
    pool = o.pool_token
    if pool is not None and stored.token_digest == digest(pool.access_token):
        return None
    token = stored.token
    plausible = (
        stored.annotated_expiry is not None
        and stored.jwt_expiry is not None
        and stored.annotated_expiry <= stored.jwt_expiry + 0.001
        and token.lifetime <= MAX_TOKEN_LIFETIME
        and token.obtained_at <= o.now + CLOCK_SKEW_SECONDS
    )
    if plausible and pool is not None and (stored.jwt_expiry is None or stored.jwt_expiry < pool.expires_at):
        message = f"Secret {o.secret_name} holds an older token than the account's current one; replacing it"
        return Trigger(reasons.SECRET_MODIFIED, message, quiet=True)
    if plausible:
        return None
    return Trigger(reasons.SECRET_MODIFIED, f"the token in Secret {o.secret_name} was replaced; restoring it")


def refresh_requested(o: Observed) -> Trigger | None:
    if o.refresh_request is not None:
        return Trigger(reasons.REFRESH_REQUESTED, f"refresh requested at {o.refresh_request}")
    return None


def expired(o: Observed) -> Trigger | None:
    if o.stored is not None and o.stored.token is not None and o.now >= o.stored.token.expires_at:
        return Trigger(reasons.EXPIRED, "the token in the Secret has expired")
    return None


def expiring(o: Observed) -> Trigger | None:
    if o.refresh_at is not None and o.now >= o.refresh_at:
        return Trigger(reasons.EXPIRING, "the token is due for refresh")
    return None


def out_of_sync(o: Observed) -> Trigger | None:
    if not o.in_sync:
        return Trigger(
            reasons.SECRET_MODIFIED, f"Secret {o.secret_name} was edited; restoring it", needs_new_token=False
        )
    return None


POLICIES: Sequence[Policy] = (
    secret_missing,
    token_unreadable,
    account_changed,
    password_changed,
    token_untrusted,
    refresh_requested,
    expired,
    expiring,
    out_of_sync,
)


def why_reissue(observed: Observed, policies: Sequence[Policy] = POLICIES) -> Trigger | None:
    for policy in policies:
        trigger = policy(observed)
        if trigger is not None:
            return trigger
    return None
