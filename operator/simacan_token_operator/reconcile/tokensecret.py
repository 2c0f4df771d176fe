"""The token Secret's shape: how it is rendered, read back, and judged ours or foreign."""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from simacan_token_operator.model.limits import MAX_TOKEN_CHARS
from simacan_token_operator.model.spec import GROUP, PLACEHOLDER_PATTERN, CredentialSpec
from simacan_token_operator.model.tokens import TokenParseError, TokenSet, jwt_exp, stored_token

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "simacan-token-operator"
EXPIRES_AT_ANNOTATION = f"{GROUP}/expires-at"
REFRESHED_AT_ANNOTATION = f"{GROUP}/refreshed-at"
ACCOUNT_ANNOTATION = f"{GROUP}/account"
"""A digest of auth URL and username: after a restart it tells whether the stored token
still belongs to the account the spec names."""

TOKEN_KEY = "token"  # noqa: S105 - Secret key names, not secrets
TOKEN_TYPE_KEY = "token_type"  # noqa: S105
EXPIRES_AT_KEY = "expires_at"
TOKENS_ENCODED = 64
"""Tokens whose base64 form is kept: an account's current one and its predecessor, for a few
dozen accounts; more accounts only encode again."""


def rfc3339(timestamp: float) -> str:
    """Whole seconds, rounded down: a displayed expiry is never later than the real one.
    Interned: the credentials refreshed in one second remember one string for it, not one each."""
    moment = datetime.datetime.fromtimestamp(int(timestamp), datetime.UTC)
    return sys.intern(moment.strftime("%Y-%m-%dT%H:%M:%SZ"))


def rfc3339_precise(timestamp: float) -> str:
    """Milliseconds, for annotations the operator reads back to schedule exactly as before a restart."""
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_rfc3339(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        return None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@functools.lru_cache(maxsize=TOKENS_ENCODED)
def _b64_token(access_token: str) -> str:
    """One encoding per token, shared: in a wave thousands of passes render a shared account's
    token (the Secret they write, and the one they compare it with), 1.7 KiB per copy."""
    return _b64(access_token)


def decoded_value(data: Mapping[str, Any], key: str, max_chars: int | None = None) -> str | None:
    """The key's value as text; None when absent, not base64 UTF-8, or (with `max_chars`) longer,
    which is judged before anything is decoded."""
    value = data.get(key)
    if not isinstance(value, str):
        return None
    if max_chars is not None and len(value) > 4 * -(-max_chars // 3):
        return None
    try:
        return base64.b64decode(value, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def digest(token: str) -> str:
    """Interned: every credential of an account remembers the digest of one token, so thousands
    of targets share one string instead of keeping a copy each."""
    return sys.intern(hashlib.sha256(token.encode()).hexdigest())


def owned_by(secret: Mapping[str, Any], uid: str) -> bool:
    refs = secret.get("metadata", {}).get("ownerReferences") or []
    return any(isinstance(ref, Mapping) and ref.get("uid") == uid for ref in refs)


@dataclass(frozen=True)
class StoredSecret:
    """What an owned token Secret holds; `token` is None when it holds nothing usable."""

    token: TokenSet | None
    account: str | None
    token_digest: str | None
    jwt_expiry: float | None = None
    """The token's own `exp` claim."""
    annotated_expiry: float | None = None
    """The expiry annotation written beside it; never later than `exp` for a token we wrote."""


def read_stored(secret: Mapping[str, Any], now: float) -> StoredSecret:
    """What a token Secret holds, judged at `now` (the pass's clock)."""
    metadata = secret.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    data = secret.get("data") or {}
    raw = decoded_value(data, TOKEN_KEY, MAX_TOKEN_CHARS)
    annotated_expiry = parse_rfc3339(annotations.get(EXPIRES_AT_ANNOTATION))
    token: TokenSet | None = None
    jwt_expiry: float | None = None
    if raw:
        try:
            token = stored_token(
                raw,
                obtained_at=parse_rfc3339(annotations.get(REFRESHED_AT_ANNOTATION)),
                expires_at=annotated_expiry,
                now=now,
            )
            jwt_expiry = jwt_exp(raw)
        except TokenParseError:
            token = None
    return StoredSecret(
        token=token,
        account=annotations.get(ACCOUNT_ANNOTATION),
        token_digest=digest(raw) if raw else None,
        jwt_expiry=jwt_expiry,
        annotated_expiry=annotated_expiry,
    )


def render_data(spec: CredentialSpec, token: TokenSet) -> dict[str, str]:
    """The Secret's data as it should be with `token`: what render writes."""
    values = {"token": token.access_token, "tokenType": "Bearer", "expiresAt": rfc3339(token.expires_at)}
    return {
        **{key: _b64(fill(template, values)) for key, template in spec.data_templates.items()},
        TOKEN_KEY: _b64_token(token.access_token),
        TOKEN_TYPE_KEY: _b64(values["tokenType"]),
        EXPIRES_AT_KEY: _b64(values["expiresAt"]),
    }


def data_digest(data: Mapping[str, Any] | None) -> str:
    """A digest of a Secret's data, whatever the order of its keys; interned like `digest`."""
    return sys.intern(hashlib.sha256(json.dumps(dict(data or {}), sort_keys=True).encode()).hexdigest())


def render(spec: CredentialSpec, owner: Mapping[str, str], token: TokenSet, account: str) -> dict[str, Any]:
    """The Secret as it should be. `owner` holds apiVersion, kind, name and uid of the credential."""
    labels = {**spec.labels, MANAGED_BY_LABEL: MANAGED_BY}
    annotations = {
        **spec.annotations,
        EXPIRES_AT_ANNOTATION: rfc3339_precise(token.expires_at),
        REFRESHED_AT_ANNOTATION: rfc3339_precise(token.obtained_at),
        ACCOUNT_ANNOTATION: account,
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": spec.target_secret,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{**owner, "controller": True}],
        },
        "data": render_data(spec, token),
    }


def fill(template: str, values: Mapping[str, str]) -> str:
    """Plain substitution of {{ .name }}; spec.py has already refused unknown names."""
    return PLACEHOLDER_PATTERN.sub(lambda match: values[match.group(1)], template)


def in_sync(actual: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Data and type must match exactly; our labels and annotations must be present, others may add more."""
    if actual.get("type", "Opaque") != desired["type"] or (actual.get("data") or {}) != desired["data"]:
        return False
    meta, want = actual.get("metadata") or {}, desired["metadata"]
    for key in ("labels", "annotations"):
        have = meta.get(key) or {}
        if any(have.get(k) != v for k, v in want[key].items()):
            return False
    return owned_by(actual, want["ownerReferences"][0]["uid"])


def merged_for_replace(actual: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """Keep labels, annotations and owners that others put on the Secret; ours win on conflict."""
    meta = actual.get("metadata") or {}
    uid = desired["metadata"]["ownerReferences"][0]["uid"]
    others = [ref for ref in meta.get("ownerReferences") or [] if ref.get("uid") != uid]
    body = dict(desired)
    body["metadata"] = {
        **desired["metadata"],
        "resourceVersion": meta.get("resourceVersion"),
        "labels": {**(meta.get("labels") or {}), **desired["metadata"]["labels"]},
        "annotations": {**(meta.get("annotations") or {}), **desired["metadata"]["annotations"]},
        "ownerReferences": [*others, *desired["metadata"]["ownerReferences"]],
    }
    return body
