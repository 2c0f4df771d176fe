"""Kubernetes I/O for the workers: Secrets, the status subresource, Events and workloads.

Every call goes through api.Calls, which keeps the guarantees: connect and read timeouts
(deadlines.py), writes only while the fence allows, the request budget (budget.py) and
429s waited out, no body ever logged (Secrets pass through), and names validated and
quoted before they become part of a path. The names other
modules use from api.py are exported here too, so that callers import from one place.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

from simacan_token_operator.kube.api import (
    METADATA_LIST,
    Calls,
    Fence,
    InvalidName,
    KubeError,
    NotLeader,
    RawApi,
    checked_name,
    decoded_keeping,
)
from simacan_token_operator.kube.budget import RequestBudget
from simacan_token_operator.kube.events import EventKey, EventMemory
from simacan_token_operator.model.body import Body
from simacan_token_operator.model.clusterspec import OWNER_LABEL
from simacan_token_operator.model.spec import GROUP, VERSION

__all__ = [
    "CLUSTER_EVENTS_NAMESPACE",
    "METADATA_LIST",
    "Body",
    "Fence",
    "InvalidName",
    "Kube",
    "KubeError",
    "NamePage",
    "NotLeader",
    "ObjectRef",
    "RawApi",
    "StampPage",
    "WorkloadStamp",
    "checked_name",
    "decoded_keeping",
]

COMPONENT = "simacan-token-operator"

CLUSTER_EVENTS_NAMESPACE = "default"
"""Where a cluster-scoped credential's Events are posted, as client-go's recorder does."""


@dataclass(frozen=True)
class ObjectRef:
    """Enough of a SimacanCredential to own a Secret and to be named by an Event."""

    namespace: str
    name: str
    uid: str
    api_version: str
    kind: str


class Kube:
    """The calls of the workers of both kinds. Events fold repeats through one memory per Kube."""

    def __init__(
        self, api_client: Any, fence: Fence | None = None, budget: RequestBudget | None = None
    ) -> None:
        self._api = Calls(api_client, fence, budget)
        self._events = EventMemory()

    async def aclose(self) -> None:
        """End the connections of the calls (contextlib.aclosing)."""
        await self._api.aclose()

    async def read_secret(self, namespace: str, name: str) -> Body | None:
        path = _secret_path(namespace, name)
        return await _none_if_absent(self._api.call(f"reading Secret {namespace}/{name}", "GET", path))

    async def create_secret(self, namespace: str, body: Body) -> Body:
        name = body["metadata"]["name"]
        checked_name("Secret", name)
        return await self._api.write(
            f"creating Secret {namespace}/{name}",
            "POST",
            f"/api/v1/namespaces/{checked_name('namespace', namespace)}/secrets",
            body=body,
        )

    async def replace_secret(self, namespace: str, body: Body) -> Body:
        """Replace with the resourceVersion in `body`: a concurrent edit makes this fail with 409."""
        name = body["metadata"]["name"]
        if not body["metadata"].get("resourceVersion"):
            raise ValueError("a Secret is replaced only with the resourceVersion it was read at")
        path = _secret_path(namespace, name)
        return await self._api.write(f"replacing Secret {namespace}/{name}", "PUT", path, body=body)

    async def delete_secret(self, namespace: str, name: str, uid: str) -> None:
        """Delete exactly the Secret read (uid precondition): a newer one of the same name stays.

        The one delete the operator ever makes: its own Secret, in a namespace that a
        ClusterSimacanCredential stopped selecting."""
        try:
            await self._api.write(
                f"deleting Secret {namespace}/{name}",
                "DELETE",
                _secret_path(namespace, name),
                body={"preconditions": {"uid": uid}},
            )
        except KubeError as error:
            if error.status not in (404, 409):  # gone already, or replaced by someone else's
                raise

    async def namespaces_holding(self, owner_uid: str) -> set[str]:
        """Namespaces with a Secret labelled as written by this ClusterSimacanCredential (metadata only)."""
        listed = await self._api.call(
            "listing the Secrets of a ClusterSimacanCredential",
            "GET",
            "/api/v1/secrets",
            query={"labelSelector": f"{OWNER_LABEL}={owner_uid}"},
            accept=METADATA_LIST,
        )
        return {
            str(item["metadata"]["namespace"])
            for item in listed.get("items") or []
            if isinstance(item, Mapping) and isinstance(item.get("metadata"), Mapping)
        }

    async def list_names(
        self, plural: str, namespace: str | None, limit: int, continue_token: str | None
    ) -> NamePage:
        """One page of the names of a kind of credential, in `namespace` (None: in all namespaces,
        or a cluster-scoped kind). Metadata only, decoded keeping the names: a tenant's
        annotations on its credentials are dropped as soon as they are parsed."""
        where = f"/namespaces/{checked_name('namespace', namespace)}" if namespace else ""
        action = f"listing {plural}" + (f" in {namespace}" if namespace else "")
        path = f"/apis/{GROUP}/{VERSION}{where}/{plural}"
        items, token = await self._page(action, path, _NAME_FIELDS, limit, continue_token)
        return NamePage(tuple(name for item in items if (name := _name(item)) is not None), token)

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any], resource_version: str
    ) -> Body:
        """A merge patch of a credential's status; `namespace` is empty for a cluster-scoped kind.

        Fenced like a Secret replace: the patch carries `resource_version` (of the last watch
        event or status patch answer), so a patch from an outdated view gets 409 and a former
        leader's late patch cannot overwrite a newer status. The answer is the object as stored,
        with its new resourceVersion: no read is needed before the next patch."""
        if not resource_version:
            raise ValueError("a status is patched only with the resourceVersion it was computed from")
        where = f"/namespaces/{checked_name('namespace', namespace)}" if namespace else ""
        path = f"/apis/{GROUP}/{VERSION}{where}/{plural}/{checked_name(plural, name)}/status"
        who = f"{namespace}/{name}" if namespace else name
        return await self._api.write(
            f"updating the status of {plural} {who}",
            "PATCH",
            path,
            body={"metadata": {"resourceVersion": resource_version}, "status": dict(status)},
            content_type="application/merge-patch+json",
        )

    async def post_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        """Record an Event on the SimacanCredential, as `kubectl describe` shows it.

        A repeat of a recent Event increments its count instead (events.py)."""
        message = message[:1024]
        key: EventKey = (ref.uid, type_, reason, message)
        where = ref.namespace or CLUSTER_EVENTS_NAMESPACE
        events = f"/api/v1/namespaces/{checked_name('namespace', where)}/events"
        action = f"posting an Event for {ref.namespace}/{ref.name}"
        now = _now()[:19] + "Z"
        repeat = self._events.repeat_of(key)
        if repeat is not None:
            try:
                await self._api.write(
                    action,
                    "PATCH",
                    f"{events}/{checked_name('Event', repeat.name)}",
                    body={"count": repeat.count + 1, "lastTimestamp": now},
                    content_type="application/merge-patch+json",
                )
                self._events.incremented(key, repeat.count + 1)
                return
            except KubeError as error:
                if error.status != 404:
                    raise
                self._events.forget(key)  # expired on the server meanwhile: post afresh
        name = f"{ref.name[:236]}.{secrets.token_hex(8)}"  # an object name has at most 253 characters
        body = _event_body(ref, name, where, type_, reason, message, now)
        await self._api.write(action, "POST", events, body=body)
        self._events.posted(key, name)

    # -- workloads that consume the token (rollout restarts, stale-consumer check) ----------------

    async def read_workload(self, namespace: str, kind: str, name: str) -> Body | None:
        path = _workload_path(namespace, kind, name)
        return await _none_if_absent(self._api.call(f"reading {kind} {namespace}/{name}", "GET", path))

    async def list_workload_stamps(
        self, namespace: str, kind: str, limit: int, continue_token: str | None
    ) -> StampPage:
        """One page of a namespace's workloads of one kind, as (name, uid, generation) only.

        Metadata only (PartialObjectMetadataList), and decoded keeping only those fields: the
        rest of each item (annotations, managedFields) is dropped as soon as it is parsed."""
        path = _workload_path(namespace, kind, None)
        items, token = await self._page(
            f"listing {kind}s in {namespace}", path, _STAMP_FIELDS, limit, continue_token
        )
        return StampPage(tuple(stamp for item in items if (stamp := _stamp(item)) is not None), token)

    async def _page(
        self, action: str, path: str, keep: frozenset[str], limit: int, continue_token: str | None
    ) -> tuple[list[Any], str | None]:
        """One page of a metadata-only list, decoded keeping `keep`: its items, and the token of
        the next page (None on the last)."""
        listed = await self._api.read_keeping(
            action,
            path,
            keep,
            query={"limit": limit, "continue": continue_token or None},
            accept=METADATA_LIST,
        )
        token = (listed.get("metadata") or {}).get("continue")
        return list(listed.get("items") or []), token if isinstance(token, str) and token else None

    async def read_workload_fields(
        self, namespace: str, kind: str, name: str, keep: frozenset[str]
    ) -> Body | None:
        """A workload decoded keeping only the keys in `keep` (and its name, uid and generation),
        at any depth; None if it does not exist."""
        path = _workload_path(namespace, kind, name)
        action = f"reading {kind} {namespace}/{name}"
        return await _none_if_absent(self._api.read_keeping(action, path, keep | _STAMP_FIELDS))

    async def restart_workload(
        self, namespace: str, kind: str, name: str, resource_version: str, annotation: str, value: str
    ) -> None:
        """What `kubectl rollout restart` does: a new pod-template annotation. The resourceVersion
        makes a second writer's restart of the same version fail with 409 instead of restarting twice."""
        await self._api.write(
            f"restarting {kind} {namespace}/{name}",
            "PATCH",
            _workload_path(namespace, kind, name),
            body={
                "metadata": {"resourceVersion": resource_version},
                "spec": {"template": {"metadata": {"annotations": {annotation: value}}}},
            },
            content_type="application/merge-patch+json",
        )


async def _none_if_absent(read: Awaitable[Body]) -> Body | None:
    """The object read, or None where the API server answers 404."""
    try:
        return await read
    except KubeError as error:
        if error.status == 404:
            return None
        raise


def _event_body(
    ref: ObjectRef, name: str, where: str, type_: str, reason: str, message: str, now: str
) -> Body:
    """A core/v1 Event about `ref`, as client-go's recorder writes it."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": where},
        "involvedObject": {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "name": ref.name,
            "namespace": ref.namespace,
            "uid": ref.uid,
        },
        "type": type_,
        "reason": reason,
        "message": message,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


WORKLOAD_RESOURCES = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
_STAMP_FIELDS = frozenset({"items", "metadata", "continue", "name", "uid", "generation", "resourceVersion"})


_NAME_FIELDS = frozenset({"items", "metadata", "continue", "name", "namespace"})


@dataclass(frozen=True, slots=True)
class NamePage:
    names: tuple[tuple[str, str], ...]
    """(namespace, name) of each item; the namespace is empty for a cluster-scoped kind."""
    continue_token: str | None
    """None on the last page."""


def _name(item: object) -> tuple[str, str] | None:
    meta = item.get("metadata") if isinstance(item, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        return None
    namespace = meta.get("namespace")
    return (namespace if isinstance(namespace, str) else "", meta["name"])


@dataclass(frozen=True, slots=True)
class WorkloadStamp:
    """Who a workload is and which version of its spec: enough to tell whether it changed."""

    name: str
    uid: str
    generation: int | str
    """metadata.generation (bumped by every spec change); the resourceVersion where a server
    keeps no generation."""


@dataclass(frozen=True, slots=True)
class StampPage:
    stamps: tuple[WorkloadStamp, ...]
    continue_token: str | None
    """None on the last page."""


def _stamp(item: object) -> WorkloadStamp | None:
    meta = item.get("metadata") if isinstance(item, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        return None
    generation = meta.get("generation")
    if not isinstance(generation, int):
        generation = str(meta.get("resourceVersion") or "")
    return WorkloadStamp(meta["name"], str(meta.get("uid") or meta["name"]), generation)


def _workload_path(namespace: str, kind: str, name: str | None) -> str:
    collection = f"/apis/apps/v1/namespaces/{checked_name('namespace', namespace)}/{WORKLOAD_RESOURCES[kind]}"
    return collection if name is None else f"{collection}/{checked_name(kind, name)}"


def _secret_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{checked_name('namespace', namespace)}/secrets/{checked_name('Secret', name)}"
