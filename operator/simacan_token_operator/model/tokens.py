"""Parse Auth API token responses into plain values.

Pure: no I/O, no kopf, no Kubernetes. Every error message is written here by hand so
that no token text can ever reach a log line through an exception.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from simacan_token_operator.model.limits import MAX_TOKEN_CHARS

MAX_TOKEN_LIFETIME = 24 * 3600.0
"""The longest an access token may claim to live, whether it comes from the Auth API or is read back
from a Secret. Simacan issues one-hour tokens; a claim far beyond that (an `exp` in the year 2100,
`expires_in` of 1e300) is a broken or forged answer, and trusting it would keep Ready True long after
the token really stopped working."""

_TOKEN_TEXT = re.compile(r"[A-Za-z0-9._~+/-]+=*")
"""RFC 6750's b64token: what may follow `Bearer `. Anything else (spaces, control characters, non-ASCII,
lone surrogates) cannot travel in a header or a Secret unchanged."""


class TokenParseError(ValueError):
    """The Auth API answered 200 with something that is not a usable token pair."""


@dataclass(frozen=True, slots=True)
class TokenSet:
    """One access/refresh pair as issued, with the times that drive scheduling.

    The token fields are excluded from repr so that logging a TokenSet is harmless.
    """

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    obtained_at: float
    expires_at: float
    refresh_expires_at: float | None = None
    subject: str | None = None

    @property
    def lifetime(self) -> float:
        return self.expires_at - self.obtained_at

    def refreshable_at(self, now: float) -> bool:
        """A refresh token is worth trying only while it has not expired."""
        if self.refresh_token is None:
            return False
        return self.refresh_expires_at is None or now < self.refresh_expires_at


def unverified_claims(token: str) -> dict[str, Any]:
    """Read a JWT's claims without checking its signature.

    The operator only schedules by `exp`; the Simacan APIs verify the signature.
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenParseError(f"access_token is longer than {MAX_TOKEN_CHARS} characters")
    if not _TOKEN_TEXT.fullmatch(token):
        raise TokenParseError("access_token is not a JWT (it holds characters a token cannot have)")
    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except (jwt.PyJWTError, ValueError, RecursionError):
        raise TokenParseError("access_token is not a JWT") from None
    if not isinstance(claims, dict):
        raise TokenParseError("access_token has no JSON claims")
    return claims


def _numeric(value: object) -> float | None:
    """Accept ints, floats and numeric strings: the Auth API sends expires_in as a string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int like 10**400 has no float
            return None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def token_expiry(access_token: str, sent_at: float, expires_in: object = None) -> float:
    """The earlier of the JWT's `exp` and send-time + expires_in; neither is an error."""
    claims = unverified_claims(access_token)
    candidates: list[float] = []
    raw_exp = claims.get("exp")
    if raw_exp is not None:
        exp = _numeric(raw_exp)
        if exp is None:
            raise TokenParseError("the access token's exp claim is not a number of seconds")
        candidates.append(exp)
    if expires_in is not None:
        seconds = _numeric(expires_in)
        if seconds is None or seconds <= 0:
            raise TokenParseError("expires_in is not a positive number of seconds")
        candidates.append(sent_at + seconds)
    if not candidates:
        raise TokenParseError("the access token has no exp claim and the response no expires_in")
    if max(candidates) - sent_at > MAX_TOKEN_LIFETIME:
        raise TokenParseError(
            f"the access token claims to live longer than {MAX_TOKEN_LIFETIME / 3600:g} hours, "
            "which no Simacan token does"
        )
    expires_at = min(candidates)
    if expires_at <= sent_at:
        raise TokenParseError("the access token had already expired when it arrived (check clocks)")
    return expires_at


def jwt_exp(token: str) -> float | None:
    """The `exp` claim as a number, or None when the token has none."""
    return _numeric(unverified_claims(token).get("exp"))


def _optional_expiry(token: str) -> float | None:
    try:
        return _numeric(unverified_claims(token).get("exp"))
    except TokenParseError:
        return None


def parse_token_response(payload: object, sent_at: float) -> TokenSet:
    """Turn a decoded JSON body from /auth/password or /auth/refresh into a TokenSet."""
    if not isinstance(payload, Mapping):
        raise TokenParseError("the response body is not a JSON object")
    access_token = payload.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise TokenParseError("the response has no access_token")
    token_type = payload.get("token_type", "bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenParseError("the response's token_type is not bearer")
    refresh_token = payload.get("refresh_token")
    if refresh_token is not None and (not isinstance(refresh_token, str) or not refresh_token):
        raise TokenParseError("the response's refresh_token is not a string")
    if refresh_token is not None and len(refresh_token) > MAX_TOKEN_CHARS:
        raise TokenParseError(f"the response's refresh_token is longer than {MAX_TOKEN_CHARS} characters")
    if refresh_token is not None and not _TOKEN_TEXT.fullmatch(refresh_token):
        raise TokenParseError("the response's refresh_token holds characters a token cannot have")
    expires_at = token_expiry(access_token, sent_at, payload.get("expires_in"))
    return TokenSet(
        access_token=access_token,
        refresh_token=refresh_token,
        obtained_at=sent_at,
        expires_at=expires_at,
        refresh_expires_at=_optional_expiry(refresh_token) if refresh_token else None,
        subject=_subject(unverified_claims(access_token)),
    )


def _subject(claims: Mapping[str, Any]) -> str | None:
    """`preferred_username` if it is printable text that status can carry, else nothing."""
    subject = claims.get("preferred_username")
    if not isinstance(subject, str) or not subject.isprintable() or len(subject) > 256:
        return None
    try:
        subject.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return None
    return sys.intern(subject)  # one string per account, however many Secrets hold its token


def stored_token(
    access_token: str,
    obtained_at: float | None,
    expires_at: float | None = None,
    *,
    now: float,
) -> TokenSet:
    """Rebuild a TokenSet from a token read back from a Secret (no refresh token is stored).

    `expires_at` is the expiry computed when the token arrived (it may be earlier than `exp`,
    from expires_in); it can only shorten the JWT's own expiry, never extend it. A token that
    claims to live longer than `MAX_TOKEN_LIFETIME`, from its start or from `now` (the pass's
    clock: this module never reads one), is unusable: no Auth API answer with such a token
    would have been accepted.
    """
    claims = unverified_claims(access_token)
    exp = _numeric(claims.get("exp"))
    if exp is None:
        raise TokenParseError("the stored token has no exp claim")
    if expires_at is not None:
        exp = min(exp, expires_at)
    iat = _numeric(claims.get("iat"))
    start = obtained_at if obtained_at is not None else iat if iat is not None else exp
    start = min(start, exp)
    if exp - start > MAX_TOKEN_LIFETIME or exp - now > MAX_TOKEN_LIFETIME:
        raise TokenParseError("the stored token claims to live longer than any Simacan token does")
    return TokenSet(
        # Interned: after a restart thousands of Secrets hold the account's one token, and each
        # target's pass reads it back; they share one string instead of a copy each.
        access_token=sys.intern(access_token),
        refresh_token=None,
        obtained_at=start,
        expires_at=exp,
        subject=_subject(claims),
    )
