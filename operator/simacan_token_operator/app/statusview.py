"""`simacan-token-operator status`: a credential's state and recent Events, for people and scripts.

It reads SimacanCredentials, ClusterSimacanCredentials and Events, never a Secret's data, so
anyone who may `get` the credentials can run it. Rendering is pure (dicts and a clock in, lines
out), so the demo's live view shows exactly what this command shows.

Which ClusterSimacanCredentials `status -n NS` shows is decided from evidence in NS, not from
the selector: evaluating the selector needs NS's labels, a cluster-scoped read a namespace's
people seldom have. One is shown when its token Secret (spec.secretName) in NS carries its uid
in the OWNER_LABEL label (read as metadata only: `list` on Secrets in NS, no data is sent), or
when its status.failedNamespaces names NS. A namespace the operator has not reached yet, or past
the first 20 failed ones with no Secret, is missed; `status --cluster NAME` shows those.

What it prints comes from objects others can write (an Event's message, a status message), and
it prints to a person's terminal: every string passes through `printable`, so an escape sequence
or a bidi override is shown as text, never acted on. It shows only the Events it can attribute to
the credential (its uid, its namespace, or `default` for the cluster kind, the operator as
source); whoever may create Events in that namespace can still forge one that passes, so this
cuts noise, not a determined forger.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from kubernetes import config
from kubernetes.client.exceptions import ApiException

from simacan_token_operator.kube.client import CLUSTER_EVENTS_NAMESPACE, COMPONENT, RawApi
from simacan_token_operator.model.clusterspec import CLUSTER_KIND, CLUSTER_PLURAL, OWNER_LABEL
from simacan_token_operator.model.spec import GROUP, KIND, PLURAL, VERSION
from simacan_token_operator.reconcile.status import ready_condition
from simacan_token_operator.reconcile.tokensecret import parse_rfc3339

EVENTS_SHOWN = 5
"""Where a cluster-scoped credential's Events live: the operator posts them there (kube.client
post_event), as client-go does, and the API server allows no other namespace for them."""
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
"""No fallback type: the API server sends Secrets' metadata or an error, never their data."""
IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

NO_STATUS = "the operator has not written a status: is it running?"

EXIT_READY = 0
EXIT_NOT_READY = 1
EXIT_ERROR = 2


@dataclass(frozen=True)
class CredentialView:
    """What a person needs to know of one SimacanCredential, read from its status (never its Secret)."""

    namespace: str
    name: str
    uid: str
    ready: str  # "True", "False" or "Unknown" (no status yet)
    reason: str
    message: str
    secret_name: str | None
    subject: str | None
    fingerprint: str | None
    expires_at: float | None
    refreshed_at: float | None
    next_refresh_at: float | None
    generation: int | None
    observed_generation: int | None

    @property
    def is_ready(self) -> bool:
        return self.ready == "True"


@dataclass(frozen=True)
class FailedNamespace:
    namespace: str
    reason: str
    message: str


@dataclass(frozen=True)
class ClusterCredentialView:
    """What a person needs to know of one ClusterSimacanCredential, read from its spec and status."""

    name: str
    uid: str
    ready: str
    reason: str
    message: str
    secret_name: str | None  # spec.secretName: the Secret written in every selected namespace
    subject: str | None
    namespaces: int | None
    failed_count: int | None
    failed: tuple[FailedNamespace, ...]  # the first 20, as the status lists them
    expires_at: float | None  # of the token that expires first
    refreshed_at: float | None
    next_refresh_at: float | None
    generation: int | None
    observed_generation: int | None
    here: str | None = None  # for `status -n NS`: what it does in NS (see the module docstring)

    @property
    def is_ready(self) -> bool:
        return self.ready == "True"


@dataclass(frozen=True)
class EventView:
    namespace: str  # where the Event lives (its metadata.namespace)
    object_namespace: str  # the namespace its involvedObject names
    object_name: str
    object_uid: str
    type: str
    reason: str
    message: str
    source: str
    count: int
    first_seen: float | None
    last_seen: float | None
    from_operator: bool = False  # every component it names (source, reporting) is the operator


@dataclass(frozen=True)
class Snapshot:
    credentials: list[CredentialView]
    events: list[EventView]
    events_error: str | None = None  # e.g. no permission to list Events: shown, not fatal


@dataclass(frozen=True)
class ClusterSnapshot:
    credentials: list[ClusterCredentialView]
    events: list[EventView]
    events_error: str | None = None
    error: str | None = None  # the kind could not be listed (e.g. HTTP 403): shown, not fatal
    notes: tuple[str, ...] = ()  # e.g. why some may be missing from `status -n NS`


class StatusError(Exception):
    """The credentials could not be read; the message says why and is safe to print."""


# --------------------------------------------------------------------------------------------- reading


def _common(metadata: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
    """The fields both kinds' views share. Ready is "Unknown", and says why, with no condition."""
    condition = ready_condition(status)
    if condition:
        ready = {
            "ready": str(condition.get("status") or "Unknown"),
            "reason": str(condition.get("reason") or ""),
            "message": str(condition.get("message") or ""),
        }
    else:
        ready = {"ready": "Unknown", "reason": "NoStatus", "message": NO_STATUS}
    return {
        "name": str(metadata.get("name") or ""),
        "uid": str(metadata.get("uid") or ""),
        **ready,
        "subject": _text(status.get("subject")),
        "expires_at": parse_rfc3339(status.get("expiresAt")),
        "refreshed_at": parse_rfc3339(status.get("refreshedAt")),
        "next_refresh_at": parse_rfc3339(status.get("nextRefreshAt")),
        "generation": _int(metadata.get("generation")),
        "observed_generation": _int(status.get("observedGeneration")),
    }


def credential_view(obj: Mapping[str, Any]) -> CredentialView:
    metadata = obj.get("metadata") or {}
    status = obj.get("status") or {}
    return CredentialView(
        namespace=str(metadata.get("namespace") or ""),
        secret_name=_text(status.get("secretName")),
        fingerprint=_text(status.get("tokenFingerprint")),
        **_common(metadata, status),
    )


def cluster_credential_view(obj: Mapping[str, Any]) -> ClusterCredentialView:
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    listed = status.get("failedNamespaces")
    failed = tuple(
        FailedNamespace(*(str(f.get(key) or "") for key in ("namespace", "reason", "message")))
        for f in (listed if isinstance(listed, list) else [])
        if isinstance(f, Mapping)
    )
    return ClusterCredentialView(
        secret_name=_text(spec.get("secretName")) or _text(status.get("secretName")),
        namespaces=_int(status.get("namespaces")),
        failed_count=_int(status.get("failedCount")),
        failed=failed,
        **_common(metadata, status),
    )


def event_view(obj: Mapping[str, Any]) -> EventView:
    involved = obj.get("involvedObject") or {}
    components = [
        str(c) for c in ((obj.get("source") or {}).get("component"), obj.get("reportingComponent")) if c
    ]
    first = parse_rfc3339(obj.get("firstTimestamp")) or parse_rfc3339(obj.get("eventTime"))
    last = parse_rfc3339(obj.get("lastTimestamp")) or first
    return EventView(
        namespace=str((obj.get("metadata") or {}).get("namespace") or ""),
        object_namespace=str(involved.get("namespace") or ""),
        object_name=str(involved.get("name") or ""),
        object_uid=str(involved.get("uid") or ""),
        type=str(obj.get("type") or ""),
        reason=str(obj.get("reason") or ""),
        message=str(obj.get("message") or ""),
        source=components[0] if components else "",
        count=_int(obj.get("count")) or 1,
        first_seen=first,
        last_seen=last,
        from_operator=bool(components) and all(c == COMPONENT for c in components),
    )


def events_of(credential: CredentialView, events: Iterable[EventView]) -> list[EventView]:
    """The Events the operator reported about this very credential, oldest first.

    Strict: the involved object's uid must equal the credential's (an Event with no uid, or a
    deleted namesake's, does not show), the Event must live in the credential's namespace and name
    it (an Event with an eventTime may name another namespace than its own: the API server allows
    it), and every component it names must be the operator. All of these fields are written by
    whoever creates the Event, so this keeps out noise and other objects' Events, not a forger
    who may create Events in the credential's namespace.
    """
    return _attributed(events, credential.uid, credential.name, credential.namespace, credential.namespace)


def cluster_events_of(credential: ClusterCredentialView, events: Iterable[EventView]) -> list[EventView]:
    """As `events_of`, for a cluster-scoped credential: its Events live in CLUSTER_EVENTS_NAMESPACE
    and name no namespace (the API server allows no other place for them)."""
    return _attributed(events, credential.uid, credential.name, "", CLUSTER_EVENTS_NAMESPACE)


def _attributed(
    events: Iterable[EventView], uid: str, name: str, names: str, lives_in: str
) -> list[EventView]:
    """The operator's Events about the object with this uid and name, whose involvedObject names
    namespace `names` and which live in namespace `lives_in`; oldest first."""
    if not uid:
        return []
    mine = [
        e
        for e in events
        if e.object_uid == uid
        and e.namespace == lives_in
        and e.object_namespace == names
        and e.object_name == name
        and e.from_operator
    ]
    return sorted(mine, key=lambda e: e.last_seen or 0.0)


def fetch(api_client: Any, namespace: str | None, name: str | None = None) -> Snapshot:
    """One credential, all in `namespace`, or all in the cluster (`namespace` None), with their Events."""
    api = RawApi(api_client)
    base = f"/apis/{GROUP}/{VERSION}"
    where = f"/namespaces/{_quote(namespace)}" if namespace else ""
    try:
        if name is not None:
            if not namespace:
                raise StatusError("a credential name needs a namespace")
            objects = [api.json("GET", f"{base}{where}/{PLURAL}/{_quote(name)}")]
        else:
            objects = list(api.json("GET", f"{base}{where}/{PLURAL}").get("items") or [])
    except ApiException as error:
        raise StatusError(printable(_describe(error, namespace, name))) from None
    except OSError as error:  # urllib3's connection errors derive from OSError
        raise StatusError(f"cannot reach the API server: {type(error).__name__}") from None
    credentials = sorted((credential_view(o) for o in objects), key=lambda c: (c.namespace, c.name))

    selector = f"involvedObject.kind={KIND}" + (f",involvedObject.name={name}" if name else "")
    try:
        listed = api.json("GET", f"/api/v1{where}/events", query={"fieldSelector": selector})
    except ApiException as error:
        return Snapshot(credentials, [], printable(f"cannot list Events: HTTP {error.status} {error.reason}"))
    except OSError as error:
        return Snapshot(credentials, [], f"cannot list Events: {type(error).__name__}")
    return Snapshot(credentials, [event_view(e) for e in listed.get("items") or []])


def fetch_cluster(
    api_client: Any, *, name: str | None = None, namespace: str | None = None
) -> ClusterSnapshot:
    """One ClusterSimacanCredential (`name`), those serving `namespace`, or all, with their Events.

    Only a failure to read the one named is fatal (StatusError); otherwise the kind is optional
    (no CRD: nothing to show) and a failure to list it (e.g. HTTP 403) is reported in `error`.
    """
    api = RawApi(api_client)
    base = f"/apis/{GROUP}/{VERSION}/{CLUSTER_PLURAL}"
    try:
        if name is not None:
            objects = [api.json("GET", f"{base}/{_quote(name)}")]
        else:
            objects = list(api.json("GET", base).get("items") or [])
    except ApiException as error:
        if name is not None:
            raise StatusError(printable(_describe_cluster(error, name))) from None
        if error.status == 404:
            return ClusterSnapshot([], [])
        message = _server_message(error) or str(error.reason)
        return ClusterSnapshot([], [], error=printable(f"HTTP {error.status} {message}"))
    except OSError as error:
        if name is not None:
            raise StatusError(f"cannot reach the API server: {type(error).__name__}") from None
        return ClusterSnapshot([], [], error=f"cannot reach the API server: {type(error).__name__}")
    credentials = sorted((cluster_credential_view(o) for o in objects), key=lambda c: c.name)
    notes: tuple[str, ...] = ()
    if namespace is not None and credentials:
        owned, problem = _owned_secrets(api, namespace)
        credentials = shown_for(credentials, namespace, owned)
        notes = (problem,) if problem else ()
    if not credentials:
        return ClusterSnapshot([], [], notes=notes)
    selector = f"involvedObject.kind={CLUSTER_KIND}" + (f",involvedObject.name={name}" if name else "")
    events = f"/api/v1/namespaces/{CLUSTER_EVENTS_NAMESPACE}/events"
    try:
        listed = api.json("GET", events, query={"fieldSelector": selector})
    except ApiException as error:
        problem = f"cannot list Events in {CLUSTER_EVENTS_NAMESPACE}: HTTP {error.status} {error.reason}"
        return ClusterSnapshot(credentials, [], printable(problem), notes=notes)
    except OSError as error:
        return ClusterSnapshot(credentials, [], f"cannot list Events: {type(error).__name__}", notes=notes)
    return ClusterSnapshot(credentials, [event_view(e) for e in listed.get("items") or []], notes=notes)


def _owned_secrets(api: RawApi, namespace: str) -> tuple[dict[str, frozenset[str]] | None, str | None]:
    """uid -> names of the Secrets in `namespace` a ClusterSimacanCredential labelled as its own;
    metadata only. None and why, when they cannot be listed."""
    unknown = (
        f"; so a {CLUSTER_KIND} is shown for {namespace} only where its status lists {namespace} as failed"
    )
    try:
        listed = api.json(
            "GET",
            f"/api/v1/namespaces/{_quote(namespace)}/secrets",
            query={"labelSelector": OWNER_LABEL},
            accept=METADATA_ONLY,
        )
    except ApiException as error:
        return None, printable(
            f"cannot list Secret metadata in {namespace}: HTTP {error.status} {error.reason}{unknown}"
        )
    except OSError as error:
        return None, printable(f"cannot list Secret metadata in {namespace}: {type(error).__name__}{unknown}")
    if listed.get("kind") != "PartialObjectMetadataList":  # never look at a whole Secret
        return None, printable(f"the API server sent no metadata-only list of Secrets{unknown}")
    owned: dict[str, set[str]] = {}
    for item in listed.get("items") or []:
        metadata = item.get("metadata") or {}
        uid = (metadata.get("labels") or {}).get(OWNER_LABEL)
        if isinstance(uid, str) and uid:
            owned.setdefault(uid, set()).add(str(metadata.get("name") or ""))
    return {uid: frozenset(names) for uid, names in owned.items()}, None


def shown_for(
    credentials: Iterable[ClusterCredentialView], namespace: str, owned: Mapping[str, frozenset[str]] | None
) -> list[ClusterCredentialView]:
    """The ClusterSimacanCredentials to show for `namespace`, each with what it does there: its
    status lists the namespace as failed, or its token Secret there carries its uid (`owned`:
    uid -> Secret names; None when they could not be read)."""
    shown = []
    for credential in credentials:
        failed = next((f for f in credential.failed if f.namespace == namespace), None)
        secret = credential.secret_name
        if failed is not None:
            here = f"failed ({failed.reason}): {failed.message}"
        elif owned is not None and secret is not None and secret in owned.get(credential.uid, ()):
            here = f"holds its token Secret {secret}"
        else:
            continue
        shown.append(replace(credential, here=f"{namespace}: {here}"))
    return shown


def _describe_cluster(error: ApiException, name: str) -> str:
    message = _server_message(error)
    if error.status == 404 and "could not find the requested resource" not in message:
        return f"{CLUSTER_KIND} {name} not found"
    if error.status == 404:
        return f"the {CLUSTER_KIND} CRD is not installed in this cluster (kubectl apply -k crds/)"
    return f"reading {CLUSTER_PLURAL} failed: HTTP {error.status} {message or error.reason}"


def _describe(error: ApiException, namespace: str | None, name: str | None) -> str:
    message = _server_message(error)
    if error.status == 404 and name is not None and "could not find the requested resource" not in message:
        return f"{KIND} {namespace}/{name} not found"
    if error.status == 404:
        return f"the {KIND} CRD is not installed in this cluster (kubectl apply -k crds/)"
    return f"reading {PLURAL} failed: HTTP {error.status} {message or error.reason}"


def _server_message(error: ApiException) -> str:
    """The API server's Status message names the resource and the verb, never Secret data."""
    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        return ""
    return str(body.get("message") or "")[:300] if isinstance(body, dict) else ""


# --------------------------------------------------------------------------------------------- rendering


def render_detail(
    credential: CredentialView, events: Sequence[EventView], now: float, events_error: str | None = None
) -> list[str]:
    """One credential, like `cmctl status certificate`; every string from the cluster escaped."""
    c = credential
    lines = _heading(c, f"Namespace:     {printable(c.namespace)}")
    lines += [
        f"Token Secret:  {printable(c.secret_name or '-')}",
        f"Fingerprint:   {printable(c.fingerprint or '-')}  (first 12 hex of the token's SHA-256)",
        f"Subject:       {printable(c.subject or '-')}",
        f"Expires at:    {_moment(c.expires_at, now)}",
        f"Refreshed at:  {_moment(c.refreshed_at, now)}",
        f"Next refresh:  {_moment(c.next_refresh_at, now)}",
    ]
    return lines + _events_section(events, now, events_error)


def render_cluster_detail(
    credential: ClusterCredentialView,
    events: Sequence[EventView],
    now: float,
    events_error: str | None = None,
) -> list[str]:
    """One ClusterSimacanCredential: the same shape, with its namespaces and those that failed."""
    c = credential
    lines = _heading(c, f"Kind:          {CLUSTER_KIND} (cluster-scoped)")
    if c.here:
        lines.append(f"In namespace:  {printable(c.here)}")
    lines += [
        f"Token Secret:  {printable(c.secret_name or '-')}  (in every selected namespace)",
        f"Namespaces:    {_count(c.namespaces)} selected, {_count(c.failed_count)} failed",
    ]
    if c.failed:
        of = f" (first {len(c.failed)} of {c.failed_count})" if (c.failed_count or 0) > len(c.failed) else ""
        rows = [["NAMESPACE", "REASON", "MESSAGE"], *([f.namespace, f.reason, f.message] for f in c.failed)]
        lines += [f"Failed namespaces{of}:", *("  " + line for line in _columns(rows))]
    lines += [
        f"Subject:       {printable(c.subject or '-')}",
        f"Expires at:    {_moment(c.expires_at, now)}  (the first to expire)",
        f"Refreshed at:  {_moment(c.refreshed_at, now)}",
        f"Next refresh:  {_moment(c.next_refresh_at, now)}",
    ]
    return lines + _events_section(events, now, events_error)


def _heading(c: CredentialView | ClusterCredentialView, second: str) -> list[str]:
    """Name, `second` (namespace or kind), Ready with reason and message, and whether it is stale."""
    reason = f" ({printable(c.reason)})" if c.reason else ""
    lines = [f"Name:          {printable(c.name)}", second, f"Ready:         {printable(c.ready)}{reason}"]
    if c.message:
        lines.append(f"  Message:     {printable(c.message)}")
    generation, observed = c.generation, c.observed_generation
    if generation is not None and observed is not None and observed < generation:
        lines.append(f"  Stale:       status describes generation {observed}, the spec is at {generation}")
    return lines


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _events_section(events: Sequence[EventView], now: float, events_error: str | None) -> list[str]:
    if events_error:
        return [f"Events:        ({printable(events_error)})"]
    if not events:
        return ["Events:        none"]
    shown = list(events)[-EVENTS_SHOWN:]
    return [
        f"Events (last {len(shown)} of {len(events)}):",
        *("  " + line for line in render_events(shown, now)),
    ]


def render_table(credentials: Sequence[CredentialView], now: float, *, namespaces: bool = False) -> list[str]:
    """One line per credential: what the demo's live view shows every second."""
    header = ["NAME", "READY", "REASON", "EXPIRES IN", "NEXT REFRESH", "FINGERPRINT", "SECRET"]
    rows = [
        [
            c.name,
            c.ready,
            c.reason or "-",
            _expires_in(c.expires_at, now),
            _next_refresh(c.next_refresh_at, now),
            c.fingerprint or "-",
            c.secret_name or "-",
        ]
        for c in credentials
    ]
    if namespaces:
        header.insert(0, "NAMESPACE")
        for row, c in zip(rows, credentials, strict=True):
            row.insert(0, c.namespace)
    return _columns([header, *rows])


def render_events(events: Sequence[EventView], now: float, *, objects: bool = False) -> list[str]:
    """Like the Events of `kubectl describe`: type, reason, age (xN over ...), source, message."""
    header = ["TYPE", "REASON", "AGE", "FROM", "MESSAGE"]
    if objects:
        header.insert(2, "OBJECT")
    rows = [header]
    for event in events:
        age = human_duration(now - event.last_seen) if event.last_seen is not None else "-"
        if event.count > 1 and event.first_seen is not None:
            age += f" (x{event.count} over {human_duration(now - event.first_seen)})"
        row = [event.type, event.reason, age, event.source or "-", event.message]
        if objects:
            row.insert(2, event.object_name)
        rows.append(row)
    return _columns(rows)


def human_duration(seconds: float) -> str:
    """kubectl's style: 45s, 3m12s, 2h5m, 3d4h."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def _moment(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return "-"
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
    delta = timestamp - now
    return f"{moment} ({'in ' + human_duration(delta) if delta >= 0 else human_duration(-delta) + ' ago'})"


def _expires_in(expires_at: float | None, now: float) -> str:
    if expires_at is None:
        return "-"
    left = expires_at - now
    return human_duration(left) if left > 0 else f"expired {human_duration(-left)} ago"


def _next_refresh(next_refresh_at: float | None, now: float) -> str:
    if next_refresh_at is None:
        return "-"
    left = next_refresh_at - now
    return f"in {human_duration(left)}" if left >= 0 else f"due {human_duration(-left)} ago"


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, every cell escaped; the last column is not padded."""
    cells = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]) - 1)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]) for row in cells]


_SHORT_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def printable(text: str) -> str:
    """`text` safe to write to a terminal, still readable.

    Every character Python does not call printable becomes a visible escape: C0 and C1 controls
    (ESC, so no CSI/OSC sequence), DEL, \\r (no overwriting), bidi overrides and isolates and other
    format characters (U+202A-U+202E, U+2066-U+2069, zero-width ones), lone surrogates, unassigned
    code points and every separator but the space; `\\x1b`, `\\u202e`, `\\t`. Letters, accents,
    CJK and symbols stay as they are. Idempotent: its output is all printable.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[ch]
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


# --------------------------------------------------------------------------------------------- command


def default_namespace() -> str:
    """The current kubeconfig context's namespace, else the pod's own, else `default` (as kubectl)."""
    try:
        _, active = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
        namespace = (active or {}).get("context", {}).get("namespace")
        if isinstance(namespace, str) and namespace:
            return namespace
    except (config.ConfigException, OSError, TypeError, AttributeError):
        pass
    try:
        return IN_CLUSTER_NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


def command(
    connect: Callable[[], Any],
    namespace: str | None,
    all_namespaces: bool,
    name: str | None,
    *,
    cluster: str | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    clock: Callable[[], float] = time.time,
) -> int:
    """Print credentials of both kinds; 0 if every one shown is Ready, 1 if not, 2 if they cannot be read.

    `cluster` names one ClusterSimacanCredential; `name` one SimacanCredential. Otherwise the
    SimacanCredentials of `namespace` (or all, `all_namespaces`) are shown with the
    ClusterSimacanCredentials that serve that namespace (or all).
    """
    if name is not None and (all_namespaces or cluster is not None):
        print("error: a NAME cannot be combined with --all-namespaces or --cluster", file=err)
        return EXIT_ERROR
    if cluster is not None and (all_namespaces or namespace):
        print("error: --cluster cannot be combined with --namespace or --all-namespaces", file=err)
        return EXIT_ERROR
    try:
        api_client = connect()
    except Exception as error:  # the kubernetes client raises bare Exceptions for a missing kubeconfig
        print(printable(f"error: no cluster to talk to: {error}"), file=err)
        return EXIT_ERROR
    scope = None if all_namespaces or cluster is not None else namespace or default_namespace()
    try:
        if cluster is not None:
            namespaced, clustered = Snapshot([], []), fetch_cluster(api_client, name=cluster)
        else:
            namespaced = fetch(api_client, scope, name)
            skipped = name is not None  # a NAME is one SimacanCredential
            clustered = ClusterSnapshot([], []) if skipped else fetch_cluster(api_client, namespace=scope)
    except StatusError as error:
        print(printable(f"error: {error}"), file=err)
        return EXIT_ERROR
    finally:
        api_client.close()
    lines = render_command(namespaced, clustered, scope, clock())
    try:
        print("\n".join(lines), file=out, flush=True)
    except BrokenPipeError:
        # The reader went away (`status | head`); the exit code still tells a script the answer.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    ready = [c.is_ready for c in namespaced.credentials] + [c.is_ready for c in clustered.credentials]
    return EXIT_READY if all(ready) else EXIT_NOT_READY


def render_command(
    namespaced: Snapshot, clustered: ClusterSnapshot, scope: str | None, now: float
) -> list[str]:
    """What `status` prints: a block per credential (SimacanCredentials first), then what could not
    be read of the cluster kind. Every string from the cluster is escaped."""
    blocks = [
        render_detail(c, events_of(c, namespaced.events), now, namespaced.events_error)
        for c in namespaced.credentials
    ]
    blocks += [
        render_cluster_detail(c, cluster_events_of(c, clustered.events), now, clustered.events_error)
        for c in clustered.credentials
    ]
    if not blocks:
        where = f" in namespace {scope}" if scope else ""
        also = f", nor {CLUSTER_PLURAL} that serve it" if scope else f" or {CLUSTER_PLURAL}"
        blocks.append([printable(f"No {PLURAL} found{where}{also if clustered.error is None else ''}.")])
    notes = [f"Note: {note}" for note in clustered.notes]
    if clustered.error is not None:
        notes.insert(0, f"{CLUSTER_KIND}s not shown: cannot list {CLUSTER_PLURAL}: {clustered.error}")
    if notes:
        blocks.append([printable(note) for note in notes])
    lines: list[str] = []
    for block in blocks:
        lines += ["", *block] if lines else block
    return lines
