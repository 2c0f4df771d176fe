"""The one rule for the names the operator puts into an API path.

Kubernetes requires Secret, namespace and custom object names to be DNS-1123 subdomains. The
spec parser rejects any other name with a message the user can act on, and the Kubernetes client
refuses to build a path from one (`../../other-ns/secrets/x` would otherwise address another
namespace's Secret): both ask this module, so the two can never disagree.
"""

from __future__ import annotations

import re
from typing import TypeGuard

MAX_DNS_SUBDOMAIN_CHARS = 253

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def is_dns_subdomain(name: object) -> TypeGuard[str]:
    """True for a string of at most 253 characters made of dot-separated lower-case DNS labels."""
    return (
        isinstance(name, str)
        and len(name) <= MAX_DNS_SUBDOMAIN_CHARS
        and _DNS_SUBDOMAIN.fullmatch(name) is not None
    )
