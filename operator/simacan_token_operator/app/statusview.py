"""`simacan-token-operator status`: a credential's state and recent Events, for people and scripts.

It reads only SimacanCredentials and Events, never a Secret, so anyone who may `get` the
credentials can run it. Rendering is pure (dicts and a clock in, lines out), so the demo's
live view shows exactly what this command shows.

What it prints comes from objects others can write (an Event's message, a status message), and
it prints to a person's terminal: every string passes through `printable`, so an escape sequence
or a bidi override is shown as text, never acted on. It shows only the Events it can attribute to
the credential (its uid, its namespace, the operator as source); whoever may create Events in
that namespace can still forge one that passes, so this cuts noise, not a determined forger.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from kubernetes import config
from kubernetes.client.exceptions import ApiException

from simacan_token_operator.kube.client import COMPONENT, RawApi
from simacan_token_operator.model.spec import GROUP, KIND, PLURAL, VERSION
from simacan_token_operator.reconcile.status import ready_condition
from simacan_token_operator.reconcile.tokensecret import parse_rfc3339

EVENTS_SHOWN = 5
IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

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


class StatusError(Exception):
    """The credentials could not be read; the message says why and is safe to print."""


# --------------------------------------------------------------------------------------------- reading


def credential_view(obj: Mapping[str, Any]) -> CredentialView:
    metadata = obj.get("metadata") or {}
    status = obj.get("status") or {}
    condition = ready_condition(status) or {}
    has_condition = bool(condition)
    return CredentialView(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
        ready=str(condition.get("status") or "Unknown"),
        reason=str(condition.get("reason") or ("" if has_condition else "NoStatus")),
        message=str(
            condition.get("message")
            or ("" if has_condition else "the operator has not written a status: is it running?")
        ),
        secret_name=_text(status.get("secretName")),
        subject=_text(status.get("subject")),
        fingerprint=_text(status.get("tokenFingerprint")),
        expires_at=parse_rfc3339(status.get("expiresAt")),
        refreshed_at=parse_rfc3339(status.get("refreshedAt")),
        next_refresh_at=parse_rfc3339(status.get("nextRefreshAt")),
        generation=_int(metadata.get("generation")),
        observed_generation=_int(status.get("observedGeneration")),
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
    if not credential.uid:
        return []
    mine = [
        e
        for e in events
        if e.object_uid == credential.uid
        and e.namespace == credential.namespace
        and e.object_namespace == credential.namespace
        and e.object_name == credential.name
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
    reason = f" ({printable(c.reason)})" if c.reason else ""
    lines = [
        f"Name:          {printable(c.name)}",
        f"Namespace:     {printable(c.namespace)}",
        f"Ready:         {printable(c.ready)}{reason}",
    ]
    if c.message:
        lines.append(f"  Message:     {printable(c.message)}")
    if (
        c.generation is not None
        and c.observed_generation is not None
        and c.observed_generation < c.generation
    ):
        lines.append(
            f"  Stale:       status describes generation {c.observed_generation}, "
            f"the spec is at {c.generation}"
        )
    lines += [
        f"Token Secret:  {printable(c.secret_name or '-')}",
        f"Fingerprint:   {printable(c.fingerprint or '-')}  (first 12 hex of the token's SHA-256)",
        f"Subject:       {printable(c.subject or '-')}",
        f"Expires at:    {_moment(c.expires_at, now)}",
        f"Refreshed at:  {_moment(c.refreshed_at, now)}",
        f"Next refresh:  {_moment(c.next_refresh_at, now)}",
    ]
    if events_error:
        lines.append(f"Events:        ({printable(events_error)})")
    elif not events:
        lines.append("Events:        none")
    else:
        shown = list(events)[-EVENTS_SHOWN:]
        lines.append(f"Events (last {len(shown)} of {len(events)}):")
        lines += ["  " + line for line in render_events(shown, now)]
    return lines


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
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    clock: Callable[[], float] = time.time,
) -> int:
    """Print one or all credentials; 0 if every one shown is Ready, 1 if not, 2 if they cannot be read."""
    if all_namespaces and name is not None:
        print("error: a NAME cannot be combined with --all-namespaces", file=err)
        return EXIT_ERROR
    try:
        api_client = connect()
    except Exception as error:  # the kubernetes client raises bare Exceptions for a missing kubeconfig
        print(printable(f"error: no cluster to talk to: {error}"), file=err)
        return EXIT_ERROR
    scope = None if all_namespaces else namespace or default_namespace()
    try:
        snapshot = fetch(api_client, scope, name)
    except StatusError as error:
        print(printable(f"error: {error}"), file=err)
        return EXIT_ERROR
    finally:
        api_client.close()
    now = clock()
    if not snapshot.credentials:
        print(printable(f"No {PLURAL} found" + (f" in namespace {scope}." if scope else ".")), file=out)
        return EXIT_READY
    blocks = [
        render_detail(c, events_of(c, snapshot.events), now, snapshot.events_error)
        for c in snapshot.credentials
    ]
    try:
        print("\n\n".join("\n".join(block) for block in blocks), file=out, flush=True)
    except BrokenPipeError:
        # The reader went away (`status | head`); the exit code still tells a script the answer.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_READY if all(c.is_ready for c in snapshot.credentials) else EXIT_NOT_READY
