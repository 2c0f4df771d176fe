"""Typed Auth API failures, so callers choose retry or give up by type, not by message.

Messages are written for the status and Events of a SimacanCredential: they name what
happened and what to do, and never carry a password or a token.
"""

from __future__ import annotations

from simacan_token_operator.model import reasons


class AuthError(Exception):
    """Base of every failure to obtain a token."""

    reason = reasons.AUTH_FAILED
    """CamelCase reason for status conditions and Events."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TransientAuthError(AuthError):
    """Worth retrying with backoff: the same request may succeed later."""

    reason = reasons.AUTH_UNAVAILABLE

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MalformedResponse(TransientAuthError):
    """The Auth API answered, but not with a usable token pair (often a proxy error page)."""

    reason = reasons.MALFORMED_RESPONSE


class RefreshDeferred(TransientAuthError):
    """A refresh request must wait: its account's forced-refresh window is still open. Not a
    failure: the credential keeps its token and the request is honoured when the window ends."""

    reason = reasons.REFRESH_REQUESTED


class PermanentAuthError(AuthError):
    """Retrying the same request cannot help; wait for the user to change something."""

    reason = reasons.AUTH_REQUEST_REJECTED


class InvalidCredentials(PermanentAuthError):
    """The password login answered 401. Retrying could lock the account."""

    reason = reasons.INVALID_CREDENTIALS


class RefreshRejected(AuthError):
    """The refresh token was refused; the caller falls back to a password login."""

    reason = reasons.REFRESH_REJECTED
