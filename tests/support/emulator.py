"""A stateful Kubernetes API over real HTTP on 127.0.0.1, for the fast test tier.

kopf and the official ``kubernetes`` client talk to it through an ordinary kubeconfig, exactly as they talk to
kube-apiserver, so the operator runs unmodified as a separate process.

It is built on kmock 0.8's ``KubernetesScaffold`` (HTTP plumbing, API discovery, ``Status`` error bodies).
kmock's own stateful ``KubernetesEmulator`` is not used: it has no PUT, no resourceVersions, no label or field
selectors, no status subresource, no JSON patch and no generateName, and it replays every object as ADDED on
each watch, so every one of its methods would need overriding. The object store below replaces it.

Known divergences from kube-apiserver (the real-cluster tier covers these):

* No garbage collection: ownerReferences never cascade; deleting a namespace removes its objects at once
  (no Terminating phase) and creating objects in a namespace being deleted is not refused.
* No authentication, authorisation or admission: every request is served; the kubeconfig token is ignored.
* No schema validation or defaulting beyond what is listed here (names, Secret ``data`` base64,
  ``stringData``, ``type``); the CRD's OpenAPI schema is not enforced and unknown fields are kept;
  immutability (Secret ``type``, ``immutable: true``) is not enforced.
* Delete options other than ``preconditions`` (``propagationPolicy``, ``gracePeriodSeconds``) are ignored.
* Strategic merge patch is applied as a JSON merge patch (lists are replaced, ``$patch`` directives ignored);
  server-side apply (``application/apply-patch+yaml``) and ``dryRun`` are refused; ``managedFields`` are
  not maintained.
* List pages with ``limit``/``continue``, but each page shows the latest state (the real server serves
  every page from the first page's snapshot, and its tokens expire); ``resourceVersion``/
  ``resourceVersionMatch`` are ignored (always the latest state); the watch cache keeps the last 10,000
  changes (older start points get 410). ``Accept: ...;as=PartialObjectMetadataList`` gives metadata only;
  other forms (Table, a watch's PartialObjectMetadata) are answered with whole objects.
* apps/v1 workloads track ``metadata.generation`` (bumped by any change outside metadata and status); a
  Deployment's annotation change does not bump it here (it does on the real server).
* Watches without ``timeoutSeconds`` stay open until the client leaves or the emulator stops (the real
  server closes them after 30-60 minutes); bookmarks are sent every ``bookmark_interval`` seconds of silence.
* core/v1 and events.k8s.io/v1 Events are stored separately (the real server serves one store in two shapes).
* A finalizer-held object cannot gain new finalizers on the real server; here it can.
* The update that removes an object's last finalizer produces one DELETED event carrying the updated state.
* Discovery is kmock's: no OpenAPI or aggregated discovery, ``/version`` reports kmock's fixed v1.26.4+k3s1,
  and 404s for unknown URLs carry kmock's reasons ("Endpoint Not Found") instead of "NotFound".
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import datetime
import functools
import json
import logging
import re
import secrets
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp.web
import attrs
import kmock

from tests.support.cluster import ClusterHandle

log = logging.getLogger(__name__)

Obj = dict[str, Any]
ObjectKey = tuple[str | None, str]  # (namespace or None, name)
ChangeCallback = Callable[["Change"], None]

MERGE_PATCH: Final = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"
INITIAL_EVENTS_END: Final = "k8s.io/initial-events-end"
DEFAULT_NAMESPACES: Final = ("default", "kube-system", "kube-public", "kube-node-lease")
_VERBS: Final = frozenset({"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"})


# --- resource types ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceType:
    """What the emulator must know about one served resource to behave like its real registry."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = False
    custom: bool = False  # from a CRD: tracks generation, refuses strategic merge, returns deleted objects
    field_labels: frozenset[str] = frozenset({"metadata.name", "metadata.namespace"})
    generation: bool = False  # a built-in registry that tracks metadata.generation (apps/v1 workloads)

    @property
    def tracks_generation(self) -> bool:
        return self.custom or self.generation

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


_META_FIELDS: Final = frozenset({"metadata.name", "metadata.namespace"})
NAMESPACES: Final = ResourceType(
    "",
    "v1",
    "namespaces",
    "Namespace",
    namespaced=False,
    status_subresource=True,
    field_labels=_META_FIELDS | {"status.phase"},
)
SECRETS: Final = ResourceType("", "v1", "secrets", "Secret", field_labels=_META_FIELDS | {"type"})
CONFIGMAPS: Final = ResourceType("", "v1", "configmaps", "ConfigMap")
_OBJECT_REFERENCE: Final = ("kind", "namespace", "name", "uid")
"""The fields of the object an Event is about, under involvedObject. (core/v1) or regarding. (events/v1)."""
CORE_EVENTS: Final = ResourceType(
    "",
    "v1",
    "events",
    "Event",
    field_labels=_META_FIELDS
    | {f"involvedObject.{f}" for f in (*_OBJECT_REFERENCE, "apiVersion", "resourceVersion", "fieldPath")}
    | {"reason", "reportingComponent", "type"},
)
EVENTS: Final = ResourceType(
    "events.k8s.io",
    "v1",
    "events",
    "Event",
    field_labels=_META_FIELDS | {f"regarding.{f}" for f in _OBJECT_REFERENCE} | {"reason", "type"},
)
LEASES: Final = ResourceType("coordination.k8s.io", "v1", "leases", "Lease")
SIMACAN_CREDENTIALS: Final = ResourceType(
    "auth.simacan.com",
    "v1alpha1",
    "simacancredentials",
    "SimacanCredential",
    status_subresource=True,
    custom=True,
)
CLUSTER_SIMACAN_CREDENTIALS: Final = ResourceType(
    "auth.simacan.com",
    "v1alpha1",
    "clustersimacancredentials",
    "ClusterSimacanCredential",
    namespaced=False,
    status_subresource=True,
    custom=True,
)
WORKLOADS: Final = tuple(
    ResourceType("apps", "v1", plural, kind, generation=True)
    for plural, kind in (
        ("deployments", "Deployment"),
        ("statefulsets", "StatefulSet"),
        ("daemonsets", "DaemonSet"),
    )
)
RESOURCE_TYPES: Final = (
    NAMESPACES,
    SECRETS,
    CONFIGMAPS,
    CORE_EVENTS,
    EVENTS,
    LEASES,
    SIMACAN_CREDENTIALS,
    CLUSTER_SIMACAN_CREDENTIALS,
    *WORKLOADS,
)


# --- Kubernetes Status errors -----------------------------------------------------------------------------


def _error(
    code: int, reason: str, message: str, rtype: ResourceType | None = None, name: str = ""
) -> Exception:
    details: dict[str, Any] = {"name": name} if name else {"causes": []}
    if rtype is not None:
        details.update(group=rtype.group, kind=rtype.plural)
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=details)


def _not_found(rtype: ResourceType, name: str) -> Exception:
    return _error(404, "NotFound", f'{rtype.qualified} "{name}" not found', rtype, name)


def _no_such_resource() -> Exception:
    return _error(404, "NotFound", "the server could not find the requested resource")


def _conflict(rtype: ResourceType, name: str, why: str = "the object has been modified") -> Exception:
    message = (
        f'Operation cannot be fulfilled on {rtype.qualified} "{name}": {why}; '
        "please apply your changes to the latest version and try again"
    )
    return _error(409, "Conflict", message, rtype, name)


def _invalid(rtype: ResourceType, name: str, detail: str) -> Exception:
    return _error(422, "Invalid", f'{rtype.kind} "{name}" is invalid: {detail}', rtype, name)


def _bad_request(message: str) -> Exception:
    return _error(400, "BadRequest", message)


def _unsupported_media_type(media_type: str) -> Exception:
    message = f"the body of the request was in an unknown format: {media_type}"
    return _error(415, "UnsupportedMediaType", message)


def _method_not_allowed() -> Exception:
    return _error(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


# --- URL paths --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiPath:
    """An object URL split into its parts (kmock 0.8's own parser fails on /api/v1/namespaces)."""

    group: str
    version: str
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_api_path(path: str) -> ApiPath | None:
    parts = [part for part in path.split("/") if part]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    is_namespace_subresource = group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")
    if len(rest) >= 3 and rest[0] == "namespaces" and not is_namespace_subresource:
        namespace, rest = rest[1], rest[2:]
    return ApiPath(
        group=group,
        version=version,
        plural=rest[0] if rest else None,
        namespace=namespace,
        name=rest[1] if len(rest) > 1 else None,
        subresource="/".join(rest[2:]) or None,
    )


# --- label and field selectors ----------------------------------------------------------------------------

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SET_TERM = re.compile(rf"\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s+\((?P<values>[^)]*)\)\s*")
_EQUALITY_TERM = re.compile(rf"\s*(?P<key>{_KEY})\s*(?P<op>==|!=|=)\s*(?P<value>[-A-Za-z0-9_.]*)\s*")
_EXISTS_TERM = re.compile(rf"\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*")
_FIELD_TERM = re.compile(r"\s*(?P<field>[A-Za-z0-9_.]+)\s*(?P<op>==|!=|=)\s*(?P<value>.*?)\s*")


@dataclass(frozen=True)
class LabelRequirement:
    key: str
    op: str  # in, notin, exists, !exists
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "in":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values  # notin, != : absent keys match too


def _split_terms(selector: str) -> list[str]:
    """Split on the commas that are not inside ``in (a,b)`` value sets."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    return [term for term in [*terms, current] if term.strip()]


def parse_label_selector(selector: str) -> list[LabelRequirement]:
    requirements = []
    for term in _split_terms(selector):
        if match := _SET_TERM.fullmatch(term):
            values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append(LabelRequirement(match["key"], match["op"], values))
        elif match := _EQUALITY_TERM.fullmatch(term):
            op = "notin" if match["op"] == "!=" else "in"
            requirements.append(LabelRequirement(match["key"], op, frozenset({match["value"]})))
        elif match := _EXISTS_TERM.fullmatch(term):
            requirements.append(LabelRequirement(match["key"], "!exists" if match["neg"] else "exists"))
        else:
            raise _bad_request(f"unable to parse requirement: {term.strip()!r}")
    return requirements


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    value: str
    negated: bool

    def matches(self, obj: Obj) -> bool:
        found: Any = obj
        for step in self.field.split("."):
            found = found.get(step) if isinstance(found, dict) else None
        actual = "" if found is None else str(found)
        return (actual == self.value) != self.negated


def parse_field_selector(selector: str, rtype: ResourceType) -> list[FieldRequirement]:
    requirements = []
    for term in (t for t in selector.split(",") if t.strip()):
        match = _FIELD_TERM.fullmatch(term)
        if match is None:
            raise _bad_request(f"invalid field selector: {term.strip()!r}")
        if match["field"] not in rtype.field_labels:
            raise _bad_request(f"field label not supported: {match['field']}")
        requirements.append(FieldRequirement(match["field"], match["value"], match["op"] == "!="))
    return requirements


@dataclass(frozen=True)
class ObjectFilter:
    """Which objects a list, watch or collection delete is about."""

    namespace: str | None = None
    name: str | None = None
    labels: tuple[LabelRequirement, ...] = ()
    fields: tuple[FieldRequirement, ...] = ()

    @classmethod
    def from_query(
        cls, rtype: ResourceType, namespace: str | None, name: str | None, query: Mapping[str, str]
    ) -> ObjectFilter:
        return cls(
            namespace=namespace,
            name=name,
            labels=tuple(parse_label_selector(query.get("labelSelector", ""))),
            fields=tuple(parse_field_selector(query.get("fieldSelector", ""), rtype)),
        )

    def matches(self, obj: Obj) -> bool:
        meta = obj.get("metadata", {})
        return (
            (self.namespace is None or meta.get("namespace") == self.namespace)
            and (self.name is None or meta.get("name") == self.name)
            and all(req.matches(meta.get("labels") or {}) for req in self.labels)
            and all(req.matches(obj) for req in self.fields)
        )

    def event_for(self, change: Change) -> Obj | None:
        """Objects entering or leaving this watcher's selection look added or deleted to it."""
        now = self.matches(change.obj)
        if change.type == "MODIFIED":
            before = change.previous is not None and self.matches(change.previous)
            if now != before:
                return {"type": "ADDED" if now else "DELETED", "object": change.obj}
        return {"type": change.type, "object": change.obj} if now else None


# --- patches ----------------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: nulls delete keys, objects merge, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class JsonPatchError(Exception):
    pass


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise JsonPatchError(f"invalid JSON pointer: {path!r}")
    return [token.replace("~1", "/").replace("~0", "~") for token in path.split("/")[1:]]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or int(token) > len(container) - (0 if allow_end else 1):
        raise JsonPatchError(f"list index out of range: {token!r}")
    return int(token)


def _resolve(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        if isinstance(doc, dict) and token in doc:
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_index(doc, token, allow_end=False)]
        else:
            raise JsonPatchError(f"path not found: /{'/'.join(tokens)}")
    return doc


def _add(doc: Any, path: Any, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1])
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, tokens[-1], allow_end=True), value)
    else:
        raise JsonPatchError(f"cannot add to a scalar at {path!r}")
    return doc


def _remove(doc: Any, path: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise JsonPatchError("cannot remove the whole document")
    parent = _resolve(doc, tokens[:-1])
    if isinstance(parent, dict) and tokens[-1] in parent:
        return parent.pop(tokens[-1])
    if isinstance(parent, list):
        return parent.pop(_index(parent, tokens[-1], allow_end=False))
    raise JsonPatchError(f"path not found: {path!r}")


def json_patch(document: Obj, operations: Any) -> Any:
    """RFC 6902 JSON patch; kopf relies on ``test`` of metadata.resourceVersion failing with 422."""
    if not isinstance(operations, list):
        raise _bad_request("a JSON patch must be a list of operations")
    doc: Any = copy.deepcopy(document)
    for op in operations:
        if not isinstance(op, dict) or "path" not in op:
            raise JsonPatchError(f"malformed operation: {op!r}")
        match op.get("op"):
            case "add":
                doc = _add(doc, op["path"], copy.deepcopy(op.get("value")))
            case "remove":
                _remove(doc, op["path"])
            case "replace":
                _remove(doc, op["path"])
                doc = _add(doc, op["path"], copy.deepcopy(op.get("value")))
            case "move":
                doc = _add(doc, op["path"], _remove(doc, op.get("from")))
            case "copy":
                doc = _add(doc, op["path"], copy.deepcopy(_resolve(doc, _pointer(op.get("from")))))
            case "test":
                if _resolve(doc, _pointer(op["path"])) != op.get("value"):
                    raise JsonPatchError(f"test failed at {op['path']!r}")
            case other:
                raise JsonPatchError(f"unknown operation: {other!r}")
    return doc


# --- the object store -------------------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_GENERATED_SUFFIX_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's own, free of vowels
_SYSTEM_METADATA: Final = (
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


@dataclass(frozen=True)
class Change:
    resource_version: int
    type: str  # ADDED, MODIFIED, DELETED
    rtype: ResourceType
    obj: Obj
    previous: Obj | None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_of(obj: Obj) -> Obj:
    """The part of an object whose changes bump metadata.generation (where it is tracked)."""
    return {key: val for key, val in obj.items() if key not in ("metadata", "status", "apiVersion", "kind")}


def _normalised_secret(obj: Obj) -> Obj:
    """Fold stringData into base64 data and default the type, as the Secret registry does."""
    data = dict(obj.get("data") or {})
    for key, value in (obj.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise _bad_request(f"illegal base64 data in Secret key {key!r}") from None
    if data:
        obj["data"] = data
    else:
        obj.pop("data", None)
    obj.setdefault("type", "Opaque")
    return obj


class ObjectStore:
    """All objects, one global resourceVersion counter, and the recent changes that watches replay.

    Every method runs to completion without awaiting, so on one event loop each call is atomic.
    Stored dicts are never mutated after being stored: updates build new dicts.
    """

    def __init__(
        self,
        resource_types: Iterable[ResourceType] = RESOURCE_TYPES,
        *,
        namespaces: Iterable[str] = DEFAULT_NAMESPACES,
        history_limit: int = 10_000,
    ) -> None:
        self._types = {(t.group, t.version, t.plural): t for t in resource_types}
        if ("", "v1", "namespaces") not in self._types:
            raise ValueError("the namespaces resource is required")
        self._objects: dict[ResourceType, dict[ObjectKey, Obj]] = {t: {} for t in self._types.values()}
        self._subscribers: dict[ResourceType, set[ChangeCallback]] = {t: set() for t in self._types.values()}
        self._history: deque[Change] = deque()
        self._history_limit = history_limit
        self._compacted_rv = 0  # changes at or below this resourceVersion can no longer be replayed
        self._last_rv = 0
        for name in namespaces:
            self.create(self.namespaces, None, {"metadata": {"name": name}})

    @property
    def types(self) -> list[ResourceType]:
        return list(self._types.values())

    @property
    def namespaces(self) -> ResourceType:
        return self._types["", "v1", "namespaces"]

    @property
    def resource_version(self) -> str:
        return str(self._last_rv)

    def resource_type(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj:
        try:
            return self._objects[rtype][namespace, name]
        except KeyError:
            raise _not_found(rtype, name) from None

    def select(self, rtype: ResourceType, selection: ObjectFilter) -> list[Obj]:
        ordered = sorted(self._objects[rtype].items(), key=lambda item: (item[0][0] or "", item[0][1]))
        return [obj for _, obj in ordered if selection.matches(obj)]

    def create(self, rtype: ResourceType, namespace: str | None, body: Any) -> Obj:
        obj = self._checked_body(rtype, namespace, body)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise _bad_request("resourceVersion should not be set on objects to be created")
        name = meta.get("name") or self._generated_name(rtype, namespace, meta.get("generateName"))
        self._check_name(rtype, name)
        if (namespace, name) in self._objects[rtype]:
            raise _error(409, "AlreadyExists", f'{rtype.qualified} "{name}" already exists', rtype, name)
        for key in _SYSTEM_METADATA:
            meta.pop(key, None)
        meta.update(name=name, uid=str(uuid.uuid4()), creationTimestamp=_now())
        if namespace is not None:
            meta["namespace"] = namespace
        if rtype.tracks_generation:
            meta["generation"] = 1
        if rtype.custom and rtype.status_subresource:
            obj.pop("status", None)
        if rtype == self.namespaces:
            meta["labels"] = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": name}
            obj["spec"] = {"finalizers": ["kubernetes"], **(obj.get("spec") or {})}
            obj["status"] = {"phase": "Active"}
        return self._commit(rtype, (namespace, name), "ADDED", self._normalised(rtype, obj), None)

    def replace(
        self, rtype: ResourceType, namespace: str | None, name: str, body: Any, subresource: str | None
    ) -> Obj:
        current = self.get(rtype, namespace, name)
        candidate = self._checked_body(rtype, namespace, body)
        if candidate["metadata"].get("name") != name:
            raise _bad_request(
                f"the name of the object ({candidate['metadata'].get('name')}) "
                f"does not match the name on the URL ({name})"
            )
        wanted_rv = candidate["metadata"].get("resourceVersion")
        if not wanted_rv and rtype.custom:  # built-in registries allow unconditional updates, CRDs do not
            detail = "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
            raise _invalid(rtype, name, detail)
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise _conflict(rtype, name)
        return self._update(rtype, current, candidate, subresource)

    def patch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        media_type: str,
        patch: Any,
        subresource: str | None,
    ) -> Obj:
        current = self.get(rtype, namespace, name)
        if media_type == MERGE_PATCH or (media_type == STRATEGIC_MERGE_PATCH and not rtype.custom):
            if not isinstance(patch, dict):
                raise _bad_request("a merge patch must be a JSON object")
            candidate = merge_patch(copy.deepcopy(current), patch)
        elif media_type == JSON_PATCH:
            try:
                candidate = json_patch(current, patch)
            except JsonPatchError as exc:
                raise _invalid(rtype, name, f"the JSON patch could not be applied: {exc}") from None
        else:
            raise _unsupported_media_type(media_type)
        if not isinstance(candidate, dict) or not isinstance(candidate.get("metadata"), dict):
            raise _invalid(rtype, name, "the patched object has no metadata")
        meta = candidate["metadata"]
        if meta.get("name") != name or meta.get("namespace") != namespace:
            raise _invalid(rtype, name, "metadata.name and metadata.namespace cannot be changed")
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise _conflict(rtype, name)
        return self._update(rtype, current, candidate, subresource)

    def delete(self, rtype: ResourceType, namespace: str | None, name: str, options: Any) -> tuple[Obj, bool]:
        """Delete now, or only mark for deletion while finalizers remain; says whether it is gone."""
        current = self.get(rtype, namespace, name)
        meta = current["metadata"]
        preconditions = (options.get("preconditions") if isinstance(options, dict) else None) or {}
        for field, actual in (("uid", meta["uid"]), ("resourceVersion", meta["resourceVersion"])):
            expected = preconditions.get(field)
            if expected is not None and expected != actual:
                raise _conflict(
                    rtype,
                    name,
                    f"Precondition failed: {field} in precondition: {expected}, "
                    f"{field} in object meta: {actual}",
                )
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return current, False
            marked = copy.deepcopy(current)
            marked["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
            if rtype.tracks_generation:
                marked["metadata"]["generation"] = meta.get("generation", 0) + 1
            return self._commit(rtype, (namespace, name), "MODIFIED", marked, current), False
        deleted = self._commit(rtype, (namespace, name), "DELETED", current, current)
        if rtype == self.namespaces:
            for other, objects in self._objects.items():
                for contained in [key for key in objects if key[0] == name]:
                    self._commit(other, contained, "DELETED", objects[contained], objects[contained])
        return deleted, True

    def subscribe(
        self, rtype: ResourceType, since: str, callback: ChangeCallback
    ) -> tuple[list[Change], int]:
        """Start receiving changes; returns the changes to replay first and the resourceVersion they reach."""
        if since in ("", "0"):  # "most recent": synthetic ADDED for everything that exists
            existing = self.select(rtype, ObjectFilter())
            backlog = [Change(self._last_rv, "ADDED", rtype, obj, None) for obj in existing]
        else:
            try:
                start = int(since)
            except ValueError:
                raise _bad_request(f"invalid resourceVersion: {since!r}") from None
            if start < self._compacted_rv:
                raise _error(410, "Expired", f"too old resource version: {start} ({self._compacted_rv + 1})")
            backlog = [c for c in self._history if c.resource_version > start and c.rtype == rtype]
        self._subscribers[rtype].add(callback)
        return backlog, self._last_rv

    def unsubscribe(self, rtype: ResourceType, callback: ChangeCallback) -> None:
        self._subscribers[rtype].discard(callback)

    def _checked_body(self, rtype: ResourceType, namespace: str | None, body: Any) -> Obj:
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise _bad_request(f"the request body is not a {rtype.kind} object")
        for field, expected in (("apiVersion", rtype.api_version), ("kind", rtype.kind)):
            if body.get(field) not in (None, "", expected):
                raise _bad_request(f"the {field} in the data ({body[field]}) does not match {expected}")
        obj = copy.deepcopy(body)
        obj.update(apiVersion=rtype.api_version, kind=rtype.kind)
        meta = obj["metadata"] = dict(obj.get("metadata") or {})
        if rtype.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise _bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            if (None, namespace) not in self._objects[self.namespaces]:
                raise _not_found(self.namespaces, str(namespace))
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    def _check_name(self, rtype: ResourceType, name: Any) -> None:
        pattern, limit = (_DNS_LABEL, 63) if rtype == self.namespaces else (_DNS_SUBDOMAIN, 253)
        if not isinstance(name, str) or len(name) > limit or not pattern.fullmatch(name):
            raise _invalid(
                rtype, str(name), f"metadata.name: Invalid value: {name!r}: must be a lowercase RFC 1123 name"
            )

    def _generated_name(self, rtype: ResourceType, namespace: str | None, prefix: Any) -> str:
        if not prefix or not isinstance(prefix, str):
            raise _invalid(rtype, "", "metadata.name: Required value: name or generateName is required")
        while True:
            name = prefix + "".join(secrets.choice(_GENERATED_SUFFIX_ALPHABET) for _ in range(5))
            if (namespace, name) not in self._objects[rtype]:
                return name

    def _normalised(self, rtype: ResourceType, obj: Obj) -> Obj:
        return _normalised_secret(obj) if (rtype.group, rtype.plural) == ("", "secrets") else obj

    def _update(self, rtype: ResourceType, current: Obj, candidate: Obj, subresource: str | None) -> Obj:
        if subresource == "status":  # the status subresource changes .status and nothing else
            new = copy.deepcopy(current)
            new.pop("status", None)
            if "status" in candidate:
                new["status"] = candidate["status"]
        else:
            new = candidate
            if rtype.status_subresource:  # ... and the main resource ignores .status
                new.pop("status", None)
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
            meta = new["metadata"] = dict(new["metadata"])
            for key in _SYSTEM_METADATA:
                meta.pop(key, None)
                if key in current["metadata"]:
                    meta[key] = current["metadata"][key]
            new.update(apiVersion=rtype.api_version, kind=rtype.kind)
            new = self._normalised(rtype, new)
            if rtype.tracks_generation and _spec_of(new) != _spec_of(current):
                meta["generation"] = current["metadata"].get("generation", 0) + 1
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if new == current:  # the real server skips no-op writes: no new resourceVersion, no event
            return current
        address = (current["metadata"].get("namespace"), current["metadata"]["name"])
        gone = bool(new["metadata"].get("deletionTimestamp")) and not new["metadata"].get("finalizers")
        return self._commit(rtype, address, "DELETED" if gone else "MODIFIED", new, current)

    def _commit(
        self, rtype: ResourceType, key: ObjectKey, change_type: str, obj: Obj, previous: Obj | None
    ) -> Obj:
        self._last_rv += 1
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self._last_rv)}}
        if change_type == "DELETED":
            self._objects[rtype].pop(key, None)
        else:
            self._objects[rtype][key] = obj
        change = Change(self._last_rv, change_type, rtype, obj, previous)
        self._history.append(change)
        while len(self._history) > self._history_limit:
            self._compacted_rv = self._history.popleft().resource_version
        for callback in list(self._subscribers[rtype]):
            callback(change)
        return obj


# --- the HTTP face ----------------------------------------------------------------------------------------


def _is_true(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _page(items: list[Obj], query: Mapping[str, str]) -> tuple[list[Obj], str | None]:
    """`limit` items after the `continue` token's position, and the token for the next page.

    The token names the last (namespace, name) served, as the real server's names the last
    etcd key; unlike the real server's it does not pin the resourceVersion of the first page."""
    try:
        limit = int(query.get("limit") or 0)
    except ValueError:
        raise _bad_request("limit must be an integer") from None
    start = 0
    if query.get("continue"):
        try:
            after = tuple(json.loads(base64.urlsafe_b64decode(query["continue"])))
        except (ValueError, TypeError):
            raise _bad_request("continue key is not valid") from None
        keys = [(o["metadata"].get("namespace") or "", o["metadata"]["name"]) for o in items]
        start = next((i for i, key in enumerate(keys) if key > after), len(items))
    if limit <= 0 or start + limit >= len(items):
        return items[start:], None
    last = items[start + limit - 1]["metadata"]
    token = base64.urlsafe_b64encode(json.dumps([last.get("namespace") or "", last["name"]]).encode())
    return items[start : start + limit], token.decode()


def _metadata_only(listed: Obj) -> Obj:
    """A list as a PartialObjectMetadataList, for `Accept: ...;as=PartialObjectMetadataList;...`."""
    items = [
        {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": item["metadata"]}
        for item in listed["items"]
    ]
    return {**listed, "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "items": items}


def _json(payload: Obj, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.json_response(payload, status=status)


async def _read_json(raw_request: aiohttp.web.BaseRequest) -> Any:
    body = await raw_request.read()
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise _bad_request("the request body is not valid JSON") from None


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesScaffold):
    """kmock's scaffold serves discovery and renders errors; object URLs are served from the store."""

    store: ObjectStore = attrs.field(factory=ObjectStore)
    bookmark_interval: float = 5.0
    internal_errors: list[Exception] = attrs.field(factory=list, init=False)
    _watch_queues: set[asyncio.Queue[Change | None]] = attrs.field(factory=set, init=False)

    def __attrs_post_init__(self) -> None:
        """Declare the store's resources to kmock's discovery endpoints."""
        super().__attrs_post_init__()
        for rtype in self.store.types:
            self.resources[kmock.resource(rtype.group, rtype.version, rtype.plural)] = kmock.ResourceInfo(
                kind=rtype.kind,
                singular=rtype.kind.lower(),
                namespaced=rtype.namespaced,
                verbs=_VERBS,
                subresources={"status"} if rtype.status_subresource else set(),
            )

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        """kmock 0.8 names the core group version "/v1"; kube-apiserver says "v1"."""
        payload = await super()._serve_version(request)
        if isinstance(payload, dict):
            payload["groupVersion"] = payload["groupVersion"].removeprefix("/")
        return payload

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Route object URLs to the store before kmock's request parser, which fails on /api/v1/namespaces."""
        api_path = parse_api_path(raw_request.path)
        if api_path is None or api_path.plural is None:
            return await super().__call__(raw_request)
        try:
            return await self._serve_objects(raw_request, api_path)
        except kmock.KubernetesError as exc:
            return await self._render_error(exc)
        except Exception as exc:
            log.exception("The emulator failed on %s %s", raw_request.method, raw_request.path)
            self.internal_errors.append(exc)
            return await self._render_error(exc)

    async def close_watches(self, timeout: float = 2.0) -> None:
        """End every open watch stream cleanly, so clients see the stream finish rather than break."""
        for queue in self._watch_queues:
            queue.put_nowait(None)
        deadline = asyncio.get_running_loop().time() + timeout
        while self._watch_queues and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    async def _serve_objects(self, raw: aiohttp.web.BaseRequest, path: ApiPath) -> aiohttp.web.StreamResponse:
        assert path.plural is not None
        rtype = self.store.resource_type(path.group, path.version, path.plural)
        if rtype is None or (path.namespace is not None and not rtype.namespaced):
            raise _no_such_resource()
        if rtype.namespaced and path.namespace is None and path.name is not None:
            raise _no_such_resource()
        if "dryRun" in raw.query:
            raise _bad_request("dryRun is not supported by the test emulator")
        if path.subresource not in (None, "status") or (path.subresource and not rtype.status_subresource):
            raise _no_such_resource()
        body = await _read_json(raw)
        method, ns, name = raw.method, path.namespace, path.name

        if method == "GET" and _is_true(raw.query.get("watch")):
            return await self._watch(raw, rtype, ObjectFilter.from_query(rtype, ns, name, raw.query))
        if name is None:
            if method == "GET":
                items = self.store.select(rtype, ObjectFilter.from_query(rtype, ns, None, raw.query))
                page, token = _page(items, raw.query)
                listed = self._list(rtype, page, token)
                if "as=PartialObjectMetadataList" in raw.headers.get("Accept", ""):
                    listed = _metadata_only(listed)
                return _json(listed)
            if method == "POST" and (ns is not None or not rtype.namespaced):
                return _json(self.store.create(rtype, ns, body), status=201)
            if method == "DELETE":
                selection = ObjectFilter.from_query(rtype, ns, None, raw.query)
                objs = [
                    self.store.delete(rtype, ns, o["metadata"]["name"], body)[0]
                    for o in self.store.select(rtype, selection)
                ]
                return _json(self._list(rtype, objs))
            raise _method_not_allowed()
        if method == "GET":
            return _json(self.store.get(rtype, ns, name))
        if method == "PUT":
            return _json(self.store.replace(rtype, ns, name, body, path.subresource))
        if method == "PATCH":
            media_type = raw.headers.get("Content-Type", "").split(";")[0].strip().lower()
            return _json(self.store.patch(rtype, ns, name, media_type, body, path.subresource))
        if method == "DELETE" and path.subresource is None:
            obj, gone = self.store.delete(rtype, ns, name, body)
            if not gone:
                return _json(obj, status=202)
            if rtype.custom:  # CRD registries return the deleted object, built-in ones a Status
                return _json(obj)
            details = {
                "name": name,
                "group": rtype.group,
                "kind": rtype.plural,
                "uid": obj["metadata"]["uid"],
            }
            return _json(
                {
                    "apiVersion": "v1",
                    "kind": "Status",
                    "metadata": {},
                    "status": "Success",
                    "details": details,
                }
            )
        raise _method_not_allowed()

    def _list(self, rtype: ResourceType, items: list[Obj], continue_token: str | None = None) -> Obj:
        meta: Obj = {"resourceVersion": self.store.resource_version}
        if continue_token:
            meta["continue"] = continue_token
        kind = f"{rtype.kind}List"
        return {"apiVersion": rtype.api_version, "kind": kind, "metadata": meta, "items": items}

    def _bookmark(self, rtype: ResourceType, resource_version: int, *, initial_end: bool = False) -> Obj:
        meta: Obj = {"resourceVersion": str(resource_version)}
        if initial_end:
            meta["annotations"] = {INITIAL_EVENTS_END: "true"}
        bookmark = {"apiVersion": rtype.api_version, "kind": rtype.kind, "metadata": meta}
        return {"type": "BOOKMARK", "object": bookmark}

    async def _watch(
        self, raw: aiohttp.web.BaseRequest, rtype: ResourceType, selection: ObjectFilter
    ) -> aiohttp.web.StreamResponse:
        since = raw.query.get("resourceVersion", "")
        bookmarks = _is_true(raw.query.get("allowWatchBookmarks"))
        initial_end = _is_true(raw.query.get("sendInitialEvents")) and since in ("", "0")
        try:
            timeout = float(raw.query["timeoutSeconds"]) if "timeoutSeconds" in raw.query else None
        except ValueError:
            raise _bad_request("timeoutSeconds must be a number") from None
        queue: asyncio.Queue[Change | None] = asyncio.Queue()
        callback: ChangeCallback = queue.put_nowait
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            backlog, start_rv = self.store.subscribe(rtype, since, callback)
        except kmock.KubernetesError as exc:
            if exc.status != 410:
                raise
            await response.prepare(raw)  # "too old": the real server says so inside the stream
            status = {
                "apiVersion": "v1",
                "kind": "Status",
                "metadata": {},
                "status": "Failure",
                "code": exc.status,
                "reason": exc.reason,
                "message": exc.message,
            }
            await response.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
            await response.write_eof()
            return response

        async def send(event: Obj | None) -> None:
            if event is not None:
                await response.write(json.dumps(event).encode() + b"\n")

        self._watch_queues.add(queue)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            await response.prepare(raw)
            for replayed in backlog:
                await send(selection.event_for(replayed))
            if initial_end:
                await send(self._bookmark(rtype, start_rv, initial_end=True))
            while deadline is None or loop.time() < deadline:
                wait = (
                    self.bookmark_interval
                    if deadline is None
                    else min(self.bookmark_interval, deadline - loop.time())
                )
                try:
                    change: Change | None = await asyncio.wait_for(queue.get(), timeout=max(wait, 0))
                except TimeoutError:
                    if bookmarks:
                        await send(self._bookmark(rtype, int(self.store.resource_version)))
                    continue
                if change is None:
                    break
                await send(selection.event_for(change))
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away; nothing to tell it
        finally:
            self.store.unsubscribe(rtype, callback)
            self._watch_queues.discard(queue)
        return response


# --- running it -------------------------------------------------------------------------------------------


class EmulatorFailure(AssertionError):
    """The emulator itself crashed on some request: a bug in the test support, not in the operator."""


class _ServerThread:
    """Runs an emulator on its own thread and event loop, so callers need no running loop."""

    def __init__(self, emulator: ApiServerEmulator) -> None:
        self._emulator = emulator
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._started = threading.Event()
        self._stop: Callable[[], object] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kubernetes-emulator", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        if not self._started.wait(timeout):
            raise EmulatorFailure(f"the emulator did not start within {timeout}s")
        if self._error is not None:
            raise EmulatorFailure("the emulator failed to start") from self._error

    def stop(self, timeout: float = 10.0) -> None:
        if self._stop is not None:
            self._stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise EmulatorFailure(f"the emulator did not stop within {timeout}s")
        if self._error is not None:
            raise EmulatorFailure("the emulator failed while stopping") from self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        self._stop = functools.partial(loop.call_soon_threadsafe, stopping.set)
        async with self._emulator:
            runner = aiohttp.web.ServerRunner(
                aiohttp.web.Server(self._emulator, handler_cancellation=True), shutdown_timeout=2.0
            )
            await runner.setup()
            try:
                await aiohttp.web.SockSite(runner, self._socket).start()
                self._started.set()
                await stopping.wait()
                await self._emulator.close_watches()
            finally:
                await runner.cleanup()


@contextlib.contextmanager
def serving(emulator: ApiServerEmulator) -> Iterator[str]:
    """Serve an emulator on a free loopback port for the duration of the block; yields its base URL."""
    server = _ServerThread(emulator)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def write_kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig for the emulator (JSON is valid YAML); the token is a placeholder nobody checks."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "emulator-admin", "user": {"token": "emulator-accepts-any-token"}}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "emulator-admin", "namespace": "default"},
            }
        ],
        "current-context": "emulator",
    }
    path.write_text(json.dumps(config, indent=2))
    return path


@contextlib.contextmanager
def running_emulator(tmp_dir: Path) -> Iterator[ClusterHandle]:
    """Start an emulated cluster with the operator's resources registered; fail loudly if it crashed."""
    emulator = ApiServerEmulator()
    with serving(emulator) as server:
        kubeconfig = write_kubeconfig(tmp_dir / "emulator-kubeconfig.yaml", server)
        yield ClusterHandle(
            name="emulator",
            server=server,
            kubeconfig=kubeconfig,
            operator_kubeconfig=kubeconfig,
            supports_garbage_collection=False,
        )
    if emulator.internal_errors:
        raise EmulatorFailure(
            f"the emulator crashed on {len(emulator.internal_errors)} request(s); "
            f"first: {emulator.internal_errors[0]!r}"
        )
