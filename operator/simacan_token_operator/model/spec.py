"""What a SimacanCredential asks for, as a frozen value, and whether the operator may do it."""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from simacan_token_operator.model import limits, reasons
from simacan_token_operator.model.names import is_dns_subdomain
from simacan_token_operator.model.schedule import parse_duration

GROUP = "auth.simacan.com"
VERSION = "v1alpha1"
PLURAL = "simacancredentials"
KIND = "SimacanCredential"
API_VERSION = f"{GROUP}/{VERSION}"
REFRESH_REQUESTED_ANNOTATION = f"{GROUP}/refresh-requested-at"

PRODUCTION_URL = "https://auth-service.services.simacan.com/api/v1"
STAGING_URL = "https://auth-service-stg.services.simacan.com/api/v1"
HTTPS_PORT = 443

DEFAULT_ALLOWED_HOSTS = (urlsplit(PRODUCTION_URL).hostname or "", urlsplit(STAGING_URL).hostname or "")


class SpecError(ValueError):
    """The spec cannot be acted on; the message tells the user which field to fix."""

    reason = reasons.INVALID_SPEC

    @property
    def message(self) -> str:
        return str(self)


class AuthURLNotAllowed(SpecError):
    """The operator refuses to send a password to this URL."""

    reason = reasons.AUTH_URL_NOT_ALLOWED


@dataclass(frozen=True)
class AuthURLPolicy:
    """Which Auth API URLs may receive a password: set by operator flags, not by the users who
    can only create SimacanCredentials.

    An allow-list entry is a host (port 443 only) or `host:port` (that port only).
    """

    allowed_hosts: frozenset[str] = frozenset(DEFAULT_ALLOWED_HOSTS)

    def check_auth_url(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
            port = parts.port
        except ValueError:
            raise SpecError(
                "spec.authURL is not a valid URL; expected https://HOST[:PORT]/PATH, e.g. " + PRODUCTION_URL
            ) from None
        if parts.scheme != "https":
            raise AuthURLNotAllowed(f"spec.authURL must use https:// (got {parts.scheme or 'no'} scheme)")
        if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
            raise AuthURLNotAllowed("spec.authURL must not carry user info, a query or a fragment")
        if not host:
            raise SpecError("spec.authURL has no valid host name")
        effective_port = port if port is not None else HTTPS_PORT
        if f"{host}:{effective_port}" in self.allowed_hosts:
            return
        if host in self.allowed_hosts and effective_port == HTTPS_PORT:
            return
        allowed = ", ".join(sorted(self.allowed_hosts))
        where = host if effective_port == HTTPS_PORT else f"{host}:{effective_port}"
        raise AuthURLNotAllowed(
            f"spec.authURL {where!r} is not allowed by the operator; allowed: {allowed} (a bare host "
            "allows port 443 only; an operator admin can add HOST or HOST:PORT with --allowed-auth-host)"
        )


DEFAULT_MIN_RESTART_INTERVAL = 300.0
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
PLACEHOLDERS = ("token", "tokenType", "expiresAt")
STANDARD_KEYS = ("token", "token_type", "expires_at")
PLACEHOLDER_PATTERN = re.compile(r"\{\{\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")


@dataclass(frozen=True)
class RestartTarget:
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
RENDERED_SIZES = {"token": limits.MAX_TOKEN_CHARS, "tokenType": len("Bearer"), "expiresAt": 20}
"""The most each placeholder can become: what the render bound is checked against."""


def _qualified_key(key: str) -> bool:
    """Kubernetes' rule for label and annotation keys: [prefix/]name."""
    prefix, _, name = key.rpartition("/")
    if prefix and not is_dns_subdomain(prefix):
        return False
    return len(name) <= 63 and bool(_QUALIFIED_NAME.fullmatch(name))


def _labels(value: object) -> dict[str, str]:
    labels = _str_map(value, "spec.secretTemplate.labels")
    if len(labels) > limits.MAX_TEMPLATE_LABELS:
        raise SpecError(
            f"spec.secretTemplate.labels has {len(labels)} entries; at most {limits.MAX_TEMPLATE_LABELS}"
        )
    for key, label in labels.items():
        if not _qualified_key(key):
            raise SpecError(f"spec.secretTemplate.labels: {key!r:.80} is not a valid label key")
        if len(label) > limits.MAX_LABEL_VALUE_CHARS or not _LABEL_VALUE.fullmatch(label):
            raise SpecError(
                f"spec.secretTemplate.labels.{key}: not a valid label value (at most "
                f"{limits.MAX_LABEL_VALUE_CHARS} letters, digits, '-', '_' and '.')"
            )
    return labels


def _annotations(value: object) -> dict[str, str]:
    annotations = _str_map(value, "spec.secretTemplate.annotations")
    if len(annotations) > limits.MAX_TEMPLATE_ANNOTATIONS:
        raise SpecError(
            f"spec.secretTemplate.annotations has {len(annotations)} entries; "
            f"at most {limits.MAX_TEMPLATE_ANNOTATIONS}"
        )
    for key, text in annotations.items():
        if len(key) > limits.MAX_ANNOTATION_KEY_CHARS or not _qualified_key(key):
            raise SpecError(f"spec.secretTemplate.annotations: {key!r:.80} is not a valid annotation key")
        if len(text) > limits.MAX_ANNOTATION_VALUE_CHARS:
            raise SpecError(
                f"spec.secretTemplate.annotations.{key}: "
                f"longer than {limits.MAX_ANNOTATION_VALUE_CHARS} characters"
            )
    return annotations


def _data_templates(value: object) -> dict[str, str]:
    templates = _str_map(value, "spec.secretTemplate.data")
    if len(templates) > limits.MAX_DATA_TEMPLATES:
        raise SpecError(
            f"spec.secretTemplate.data has {len(templates)} keys; at most {limits.MAX_DATA_TEMPLATES}"
        )
    for key, template in templates.items():
        if not _SECRET_KEY.fullmatch(key) or len(key) > limits.MAX_DATA_KEY_CHARS:
            raise SpecError(f"spec.secretTemplate.data: {key!r:.80} is not a valid Secret key")
        if key in STANDARD_KEYS:
            raise SpecError(f"spec.secretTemplate.data: {key!r} is a standard key the operator writes itself")
        if len(template) > limits.MAX_DATA_TEMPLATE_CHARS:
            raise SpecError(
                f"spec.secretTemplate.data.{key}: longer than {limits.MAX_DATA_TEMPLATE_CHARS} characters"
            )
        rest = PLACEHOLDER_PATTERN.sub("", template)
        unknown = [name for name in PLACEHOLDER_PATTERN.findall(template) if name not in PLACEHOLDERS]
        if unknown or "{{" in rest or "}}" in rest:
            what = f"{{{{ .{unknown[0]} }}}}" if unknown else "a malformed {{ ... }}"
            raise SpecError(
                f"spec.secretTemplate.data.{key}: unknown placeholder {what:.60}; "
                "use {{ .token }}, {{ .tokenType }} or {{ .expiresAt }}"
            )
    worst = rendered_size_bound(templates)
    if worst > limits.MAX_RENDERED_DATA_BYTES:
        raise SpecError(
            f"spec.secretTemplate.data could render {worst} bytes of Secret data, counting each "
            f"{{{{ .token }}}} as a token of {limits.MAX_TOKEN_CHARS} characters; the bound is "
            f"{limits.MAX_RENDERED_DATA_BYTES} bytes for all keys together (the token key included): "
            "use fewer or shorter templates"
        )
    return templates


def rendered_size_bound(templates: Mapping[str, str]) -> int:
    """The most the token Secret's data can hold with these templates, in bytes."""
    total = sum(RENDERED_SIZES.values())  # the standard keys: token, token_type, expires_at
    for template in templates.values():
        names = PLACEHOLDER_PATTERN.findall(template)
        total += len(PLACEHOLDER_PATTERN.sub("", template).encode()) + sum(RENDERED_SIZES[n] for n in names)
    return total


def _restart_targets(value: object) -> tuple[RestartTarget, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SpecError("spec.rolloutRestartTargets must be a list of {kind, name}")
    targets: list[RestartTarget] = []
    for index, item in enumerate(value):
        where = f"spec.rolloutRestartTargets[{index}]"
        if not isinstance(item, Mapping) or item.get("kind") not in WORKLOAD_KINDS:
            raise SpecError(f"{where}.kind must be one of {', '.join(WORKLOAD_KINDS)}")
        targets.append(RestartTarget(str(item["kind"]), _secret_name(item.get("name"), f"{where}.name")))
    return tuple(dict.fromkeys(targets))


def _duration(value: object, where: str) -> float | None:
    if value is None:
        return None
    text = str(value)
    if len(text) > limits.MAX_DURATION_CHARS:
        raise SpecError(f"{where}: longer than {limits.MAX_DURATION_CHARS} characters")
    try:
        return parse_duration(text)
    except ValueError as error:
        raise SpecError(f"{where}: {error}") from None


@dataclass(frozen=True)
class CredentialSpec:
    name: str
    namespace: str
    credentials_secret: str
    username_key: str = "username"
    password_key: str = "password"  # noqa: S105 - a key name, not a password
    auth_url: str = PRODUCTION_URL
    secret_name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    refresh_before: float | None = None
    suspend: bool = False
    data_templates: Mapping[str, str] = field(default_factory=dict)
    """Extra Secret keys: templates with {{ .token }}, {{ .tokenType }} and {{ .expiresAt }}."""
    restart_targets: tuple[RestartTarget, ...] = ()
    min_restart_interval: float = DEFAULT_MIN_RESTART_INTERVAL

    @property
    def target_secret(self) -> str:
        return self.secret_name or self.name


def watched_secrets(name: str, namespace: str, spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The Secrets whose changes concern a credential: its credentials Secret and its token Secret
    (a tuple: a frozenset of two is 216 bytes, kept per credential)."""
    try:
        parsed = parse_spec(name, namespace, spec)
    except SpecError:
        return ()
    return tuple(dict.fromkeys((parsed.credentials_secret, parsed.target_secret)))


def _secret_name(value: object, where: str) -> str:
    """A Secret name ends up in an API path: only a DNS-1123 subdomain may get that far."""
    if not is_dns_subdomain(value):
        raise SpecError(
            f"{where} must be a Secret name: lower-case letters, digits, '-' and '.' (got {value!r:.80})"
        )
    return value


def _str_map(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SpecError(f"{where} must map strings to strings")
    return dict(value)


def parse_spec(name: str, namespace: str, spec: Mapping[str, Any]) -> CredentialSpec:
    """Validate again what the CRD schema already checks: the operator may meet old or unvalidated objects."""
    ref = spec.get("credentialsSecretRef")
    if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str) or not ref["name"]:
        raise SpecError("spec.credentialsSecretRef.name is required")
    credentials_secret = _secret_name(ref["name"], "spec.credentialsSecretRef.name")
    secret_name = _secret_name(spec.get("secretName") or name, "spec.secretName")
    seconds = _duration(spec.get("refreshBefore"), "spec.refreshBefore")
    if seconds is not None and seconds <= 0:
        raise SpecError("spec.refreshBefore must be longer than 0s")
    restart_interval = _duration(spec.get("minRestartInterval"), "spec.minRestartInterval")
    template = spec.get("secretTemplate") or {}
    if not isinstance(template, Mapping):
        raise SpecError("spec.secretTemplate must be an object")
    auth_url = spec.get("authURL") or PRODUCTION_URL
    if not isinstance(auth_url, str):
        raise SpecError("spec.authURL must be a string")
    return CredentialSpec(
        name=name,
        namespace=namespace,
        credentials_secret=credentials_secret,
        username_key=str(ref.get("usernameKey") or "username"),
        password_key=str(ref.get("passwordKey") or "password"),
        auth_url=auth_url.rstrip("/"),
        secret_name=secret_name,
        labels=_labels(template.get("labels")),
        annotations=_annotations(template.get("annotations")),
        refresh_before=seconds,
        suspend=bool(spec.get("suspend", False)),
        data_templates=_data_templates(template.get("data")),
        restart_targets=_restart_targets(spec.get("rolloutRestartTargets")),
        min_restart_interval=max(
            DEFAULT_MIN_RESTART_INTERVAL if restart_interval is None else restart_interval,
            limits.MIN_RESTART_INTERVAL_SECONDS,  # a CRD older than this bound may have let less in
        ),
    )


def refresh_request(annotations: Mapping[str, Any] | None) -> str | None:
    """The refresh-requested-at value when it is one the operator acts on: non-empty text of at
    most MAX_REFRESH_REQUEST_CHARS (it is copied into status)."""
    value = (annotations or {}).get(REFRESH_REQUESTED_ANNOTATION)
    if not isinstance(value, str) or not value or len(value) > limits.MAX_REFRESH_REQUEST_CHARS:
        return None
    return value


def oversized_refresh_request(annotations: Mapping[str, Any] | None) -> str | None:
    """The start of a refresh-requested-at value too long to act on, to warn about it once."""
    value = (annotations or {}).get(REFRESH_REQUESTED_ANNOTATION)
    if isinstance(value, str) and len(value) > limits.MAX_REFRESH_REQUEST_CHARS:
        return value[: limits.MAX_REFRESH_REQUEST_CHARS + 1]
    return None


def kept_annotations(annotations: Mapping[str, Any] | None) -> dict[str, str]:
    """Of a credential's annotations, what a worker keeps: the refresh request, cut to one
    character past its bound (enough to tell that it is too long, never 256 KiB per credential)."""
    value = (annotations or {}).get(REFRESH_REQUESTED_ANNOTATION)
    if not isinstance(value, str):
        return {}
    return {REFRESH_REQUESTED_ANNOTATION: value[: limits.MAX_REFRESH_REQUEST_CHARS + 1]}


@dataclass(frozen=True)
class LoginSource:
    """Where and as whom to log in. Equal sources share one token (one login per lifetime)."""

    auth_url: str
    username: str
    password: str = field(repr=False)

    @property
    def key(self) -> str:
        """Identity of the login; a digest so the password is never kept as a dict key in clear.
        Interned: every credential that shares the login remembers one string."""
        material = "\0".join((self.auth_url, self.username, self.password)).encode()
        return sys.intern(hashlib.sha256(material).hexdigest())

    @property
    def account(self) -> str:
        """Which account at which Auth API, without the password: stored on the Secret to spot changes."""
        return hashlib.sha256(f"{self.auth_url}\0{self.username}".encode()).hexdigest()[:16]
