"""Every reason the operator shows a user, in one place (cert-manager's constants.go).

A reason is a CamelCase word in the Ready condition, in Events, or both. Tests, docs and
alert rules match on them, so each is spelled once, here.
"""

from __future__ import annotations

# -- Ready=True --------------------------------------------------------------------------------
TOKEN_VALID = "TokenValid"
"""The Secret holds a token that is not yet due for refresh."""

# -- why a new token (or a rewrite of the Secret) is needed: triggers.py -------------------------
SECRET_MISSING = "SecretMissing"
SECRET_INVALID = "SecretInvalid"
ACCOUNT_CHANGED = "AccountChanged"
PASSWORD_CHANGED = "PasswordChanged"
REFRESH_REQUESTED = "RefreshRequested"
EXPIRED = "Expired"
EXPIRING = "Expiring"
SECRET_MODIFIED = "SecretModified"

ROUTINE = frozenset({EXPIRING})
"""Triggers that happen every token lifetime: no Event, or the Events would drown the rest."""

# -- problems the user can fix (Ready=False unless a still-valid token is held) ------------------
INVALID_SPEC = "InvalidSpec"
AUTH_URL_NOT_ALLOWED = "AuthURLNotAllowed"
SECRET_CONFLICT = "SecretConflict"
CREDENTIALS_SECRET_NOT_FOUND = "CredentialsSecretNotFound"
CREDENTIALS_KEY_MISSING = "CredentialsKeyMissing"
SUSPENDED = "Suspended"
TOKEN_EXPIRED = "TokenExpired"
"""The held token expired while a request for a new one is still under way."""
TOKEN_LIFETIME_TOO_SHORT = "TokenLifetimeTooShort"
"""The Auth API's tokens live so briefly that refreshing them would exceed the minimum spacing."""

# -- the Auth API's answers: errors.py ----------------------------------------------------------
AUTH_FAILED = "AuthFailed"
AUTH_UNAVAILABLE = "AuthUnavailable"
MALFORMED_RESPONSE = "MalformedResponse"
AUTH_REQUEST_REJECTED = "AuthRequestRejected"
INVALID_CREDENTIALS = "InvalidCredentials"
REFRESH_REJECTED = "RefreshRejected"

# -- the workloads that consume the token: consumers.py ---------------------------------------
CONSUMERS_STALE = "ConsumersStale"
"""Condition type and Event reason: a workload reads the token once (env var, subPath mount)."""
READS_AT_START = "ReadsTokenAtStart"
NO_STALE_CONSUMERS = "NoStaleConsumers"
ROLLOUT_RESTARTED = "RolloutRestarted"
RESTART_TARGET_NOT_FOUND = "RestartTargetNotFound"
ROLLOUT_RESTARTS = "RolloutRestarts"
"""Condition type: whether the operator may read and restart its rolloutRestartTargets."""
RESTARTS_PERMITTED = "RestartsPermitted"
RESTART_NOT_PERMITTED = "RestartNotPermitted"
"""Condition reason and Event reason: HTTP 403 on reading or patching a restart target (RBAC)."""

# -- Events only -------------------------------------------------------------------------------
REFRESH_REQUEST_IGNORED = "RefreshRequestIgnored"
"""The refresh-requested-at annotation is longer than its bound (limits.py)."""
ISSUED = "Issued"
RECOVERED = "Recovered"

HEALTHY = frozenset({TOKEN_VALID, SUSPENDED})
"""Reasons after which a new token is routine, not a recovery."""
