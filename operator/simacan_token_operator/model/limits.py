"""Bounds on everything a tenant controls, checked before any work is done.

The operator is one service for every namespace: what one namespace's objects make it read,
render, keep or write must be bounded, or one tenant can take the operator down for all of them.
Kubernetes bounds one object (Secret data 1 MiB, request body 3 MiB, annotations 256 KiB in all,
label values 63 characters); these bound what the operator derives from such objects. The CRDs
state the same numbers, and the operator checks them again: objects stored before a tighter CRD
keep their old values. docs: docs/security.md, "Bounds on what a tenant controls".
"""

from __future__ import annotations

MAX_TOKEN_CHARS = 8 * 1024
"""An access or refresh token. A real Simacan (Keycloak RS256) JWT is 1-2 KiB; proxies reject
header lines much longer than 8 KiB by default, so a longer token could not be used anyway."""

MAX_RENDERED_DATA_BYTES = 64 * 1024
"""The token Secret's data, all values together, counted for the worst case: every
`{{ .token }}` as a token of MAX_TOKEN_CHARS: room for the token key and six templates holding it."""

MAX_TEMPLATE_LABELS = 32
MAX_LABEL_VALUE_CHARS = 63
MAX_TEMPLATE_ANNOTATIONS = 32
MAX_ANNOTATION_KEY_CHARS = 317
"""A qualified name: a DNS-1123 prefix of at most 253, '/', and a name of at most 63."""
MAX_ANNOTATION_VALUE_CHARS = 4096
MAX_DATA_TEMPLATES = 16
MAX_DATA_TEMPLATE_CHARS = 4096
MAX_DATA_KEY_CHARS = 253

MAX_SELECTOR_LABELS = 32
MAX_SELECTOR_EXPRESSIONS = 16
MAX_SELECTOR_VALUES = 32

MAX_DURATION_CHARS = 32
MIN_RESTART_INTERVAL_SECONDS = 60.0
"""Whoever may edit a SimacanCredential must not be able to restart its targets on demand."""

MAX_REFRESH_REQUEST_CHARS = 64
"""The refresh-requested-at annotation: a timestamp or a short word; a longer one is ignored."""

MAX_STALE_CONSUMERS_LISTED = 20
MAX_CONDITION_MESSAGE_CHARS = 1024
MAX_FAILED_NAMESPACE_MESSAGE_CHARS = 256


def shortened(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, saying that it was cut."""
    if len(text) <= limit:
        return text
    marker = " [...]"
    return text[: limit - len(marker)] + marker
