"""The credentials Secret, read into a LoginSource: the only place a password is decoded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simacan_token_operator.model import reasons
from simacan_token_operator.model.spec import CredentialSpec, LoginSource, SpecError
from simacan_token_operator.reconcile.tokensecret import decoded_value


class CredentialsSecretNotFound(SpecError):
    reason = reasons.CREDENTIALS_SECRET_NOT_FOUND


class CredentialsKeyMissing(SpecError):
    reason = reasons.CREDENTIALS_KEY_MISSING


def without_final_newline(value: str) -> str:
    """`kubectl create secret --from-file` keeps a file's final newline; nothing else is changed,
    since spaces can be part of a password."""
    if value.endswith("\r\n"):
        return value[:-2]
    if value.endswith("\n"):
        return value[:-1]
    return value


def login_source(spec: CredentialSpec, secret: Mapping[str, Any] | None) -> LoginSource:
    ref = f"Secret {spec.namespace}/{spec.credentials_secret}"
    if secret is None:
        raise CredentialsSecretNotFound(
            f"{ref} (spec.credentialsSecretRef) does not exist; create it with keys "
            f"{spec.username_key!r} and {spec.password_key!r}"
        )
    values: dict[str, str] = {}
    for key, field_name in ((spec.username_key, "usernameKey"), (spec.password_key, "passwordKey")):
        data = secret.get("data") or {}
        decoded = decoded_value(data, key)
        if data.get(key) and decoded is None:
            raise CredentialsKeyMissing(
                f"{ref} key {key!r} (spec.credentialsSecretRef.{field_name}) is not UTF-8 text"
            )
        value = without_final_newline(decoded or "")
        if not value:
            raise CredentialsKeyMissing(
                f"{ref} has no non-empty key {key!r} (spec.credentialsSecretRef.{field_name})"
            )
        values[key] = value
    return LoginSource(spec.auth_url, values[spec.username_key], values[spec.password_key])


def version(secret: Mapping[str, Any] | None) -> str | None:
    """The credentials Secret's resourceVersion: any change to it may fix a rejected login."""
    if secret is None:
        return None
    value = (secret.get("metadata") or {}).get("resourceVersion")
    return value if isinstance(value, str) else None
