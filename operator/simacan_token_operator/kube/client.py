"""Kubernetes I/O for the reconciler: Secrets, the status subresource and Events.

The official client is synchronous; every call runs in the default thread pool so the
event loop never blocks. Bodies are plain dicts (raw JSON). Nothing here logs a body:
Secrets pass through. Every call has connect and read timeouts (deadlines.py), every write
first asks the fence whether this replica may still write, and names are validated and
quoted before they become part of a path.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import re
import secrets
import urllib.parse
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from simacan_token_operator.kube.deadlines import CONNECT_TIMEOUT, READ_TIMEOUT
from simacan_token_operator.kube.events import EventKey, EventMemory
from simacan_token_operator.model.spec import GROUP, PLURAL, VERSION

COMPONENT = "simacan-token-operator"

Body = dict[str, Any]


class KubeError(Exception):
    """A Kubernetes API call failed; `status` is the HTTP code (0 for transport errors)."""

    def __init__(self, action: str, status: int, reason: str) -> None:
        super().__init__(f"{action} failed: HTTP {status} {reason}".strip())
        self.status = status


class InvalidName(KubeError, ValueError):
    """A name that is not a valid DNS-1123 subdomain never reaches the API server as a path
    (`../../other-ns/secrets/x` would otherwise address another namespace's Secret). A
    KubeError with the 422 the API server gives invalid names, so callers need no new case."""

    def __init__(self, what: str, name: str) -> None:
        shown = name if len(name) <= 80 else name[:80] + "..."
        super().__init__(f"using {what} {shown!r}", 422, "not a valid DNS-1123 subdomain name")


class NotLeader(KubeError):
    """This replica lost (or never held) the Lease: it must not write."""

    def __init__(self, action: str) -> None:
        super().__init__(action, 0, "refused: this replica is not the leader")


class Fence(Protocol):
    def write_budget(self) -> float | None:
        """Seconds a write may take from now; None when this replica must not write at all."""

    def track(self, write: asyncio.Future[Any]) -> None:
        """A write has been sent; it ends (answered, failed or timed out) when `write` is done."""


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark the outcome of a write as seen even when its caller was cancelled meanwhile."""
    if not future.cancelled():
        future.exception()


_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def checked_name(what: str, name: str) -> str:
    """`name` quoted for a URL path, after checking it is a DNS-1123 subdomain (as Kubernetes
    requires of Secret, namespace and custom object names)."""
    if not isinstance(name, str) or len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        raise InvalidName(what, str(name))
    return urllib.parse.quote(name, safe="")


@dataclass(frozen=True)
class ObjectRef:
    """Enough of a SimacanCredential to own a Secret and to be named by an Event."""

    namespace: str
    name: str
    uid: str
    api_version: str
    kind: str


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RawApi:
    """The official client's transport (kubeconfig or ServiceAccount auth, TLS, token refresh)
    without its generated API classes: those validate every call through pydantic and load
    hundreds of model classes, some 20 MiB the operator has no use for. Bodies are dicts."""

    def __init__(self, api_client: Any) -> None:
        self._client = api_client

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
    ) -> Any:
        """Send one request; returns the client's RESTResponse, raises ApiException on non-2xx.

        `timeout` is (connect, read) in seconds: no call waits forever on a dead connection."""
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        params = self._client.param_serialize(
            method=method,
            resource_path=path,
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(*params, _request_timeout=timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Body:
        response = self.request(method, path, **kwargs)
        decoded = json.loads(response.read())
        if not isinstance(decoded, dict):
            raise ValueError("the API server answered with something other than a JSON object")
        return decoded


class Kube:
    def __init__(self, api_client: Any, fence: Fence | None = None) -> None:
        self._api = RawApi(api_client)
        self._fence = fence
        self._events = EventMemory()

    async def _call(self, action: str, method: str, path: str, **kwargs: Any) -> Body:
        return await self._mapped(action, asyncio.to_thread(self._api.json, method, path, **kwargs))

    @staticmethod
    async def _mapped(action: str, call: Awaitable[Body]) -> Body:
        try:
            return await call
        except ApiException as error:
            raise KubeError(action, int(error.status or 0), _status_reason(error)) from None
        except (OSError, ValueError, HTTPError) as error:  # no connection, timed out, cut off
            raise KubeError(action, 0, type(error).__name__) from None

    async def _write(self, action: str, method: str, path: str, **kwargs: Any) -> Body:
        """A write, only while the fence allows it and never outliving the time it grants.

        The check is made right before the request leaves; a request already sent when
        leadership ends is cut off by its timeout, which the fence keeps shorter than the time
        before a standby may take over. The fence also learns of every write in flight: a
        cancelled caller does not stop the thread sending it, and a clean hand-over waits for it.
        Replaces carry a resourceVersion, so a late one fails."""
        budget = READ_TIMEOUT if self._fence is None else self._fence.write_budget()
        if budget is None:
            raise NotLeader(action)
        budget = min(budget, READ_TIMEOUT)
        timeout = (min(CONNECT_TIMEOUT, budget), budget)
        send = functools.partial(self._api.json, method, path, timeout=timeout, **kwargs)
        sending = asyncio.get_running_loop().run_in_executor(None, send)
        sending.add_done_callback(_retrieve)
        if self._fence is not None:
            self._fence.track(sending)
        try:
            return await self._mapped(action, asyncio.wait_for(asyncio.shield(sending), budget))
        except TimeoutError:
            raise KubeError(action, 0, "TimeoutError") from None

    async def read_secret(self, namespace: str, name: str) -> Body | None:
        try:
            return await self._call(
                f"reading Secret {namespace}/{name}", "GET", _secret_path(namespace, name)
            )
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def create_secret(self, namespace: str, body: Body) -> Body:
        name = body["metadata"]["name"]
        checked_name("Secret", name)
        return await self._write(
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
        return await self._write(
            f"replacing Secret {namespace}/{name}",
            "PUT",
            _secret_path(namespace, name),
            body=body,
        )

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Body:
        path = (
            f"/apis/{GROUP}/{VERSION}/namespaces/{checked_name('namespace', namespace)}/{PLURAL}/"
            f"{checked_name('SimacanCredential', name)}/status"
        )
        return await self._write(
            f"updating the status of {namespace}/{name}",
            "PATCH",
            path,
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )

    async def post_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        """Record an Event on the SimacanCredential, as `kubectl describe` shows it.

        A repeat of a recent Event increments its count instead (events.py)."""
        message = message[:1024]
        key: EventKey = (ref.uid, type_, reason, message)
        where = ref.namespace or "default"  # a cluster-scoped object's Events live there (as client-go's)
        events = f"/api/v1/namespaces/{checked_name('namespace', where)}/events"
        action = f"posting an Event for {ref.namespace}/{ref.name}"
        now = _now()[:19] + "Z"
        repeat = self._events.repeat_of(key)
        if repeat is not None:
            try:
                await self._write(
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
        body: Body = {
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
        await self._write(action, "POST", events, body=body)
        self._events.posted(key, name)

    # -- workloads that consume the token (rollout restarts, stale-consumer check) ----------------

    async def read_workload(self, namespace: str, kind: str, name: str) -> Body | None:
        try:
            return await self._call(
                f"reading {kind} {namespace}/{name}", "GET", _workload_path(namespace, kind, name)
            )
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def list_workload_stamps(
        self, namespace: str, kind: str, limit: int, continue_token: str | None
    ) -> StampPage:
        """One page of a namespace's workloads of one kind, as (name, uid, generation) only.

        Metadata only (PartialObjectMetadataList), and decoded keeping only those fields: the
        rest of each item (annotations, managedFields) is dropped as soon as it is parsed."""
        listed = await self._read_keeping(
            f"listing {kind}s in {namespace}",
            _workload_path(namespace, kind, None),
            _STAMP_FIELDS,
            query={"limit": limit, "continue": continue_token or None},
            accept=METADATA_LIST,
        )
        stamps = tuple(stamp for item in listed.get("items") or [] if (stamp := _stamp(item)) is not None)
        token = (listed.get("metadata") or {}).get("continue")
        return StampPage(stamps, token if isinstance(token, str) and token else None)

    async def read_workload_fields(
        self, namespace: str, kind: str, name: str, keep: frozenset[str]
    ) -> Body | None:
        """A workload decoded keeping only the keys in `keep` (and its name, uid and generation),
        at any depth; None if it does not exist."""
        try:
            return await self._read_keeping(
                f"reading {kind} {namespace}/{name}",
                _workload_path(namespace, kind, name),
                keep | _STAMP_FIELDS,
            )
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def _read_keeping(self, action: str, path: str, keep: frozenset[str], **kwargs: Any) -> Body:
        def fetch() -> Body:
            return decoded_keeping(self._api.request("GET", path, **kwargs).read(), keep)

        return await self._mapped(action, asyncio.to_thread(fetch))

    async def restart_workload(
        self, namespace: str, kind: str, name: str, resource_version: str, annotation: str, value: str
    ) -> None:
        """What `kubectl rollout restart` does: a new pod-template annotation. The resourceVersion
        makes a second writer's restart of the same version fail with 409 instead of restarting twice."""
        await self._write(
            f"restarting {kind} {namespace}/{name}",
            "PATCH",
            _workload_path(namespace, kind, name),
            body={
                "metadata": {"resourceVersion": resource_version},
                "spec": {"template": {"metadata": {"annotations": {annotation: value}}}},
            },
            content_type="application/merge-patch+json",
        )


WORKLOAD_RESOURCES = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_STAMP_FIELDS = frozenset({"items", "metadata", "continue", "name", "uid", "generation", "resourceVersion"})


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


def decoded_keeping(raw: bytes, keep: frozenset[str]) -> Body:
    """A JSON object decoded keeping, in every object at any depth, only the keys in `keep`.

    Each object is filtered as soon as it is parsed, so a workload's megabyte of annotations,
    managedFields or env values never exists as Python objects beyond one value at a time;
    what is held at most is the response's bytes, their text and the kept fields."""

    def kept(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        return {key: value for key, value in pairs if key in keep}

    decoded = json.loads(raw, object_pairs_hook=kept)
    if not isinstance(decoded, dict):
        raise ValueError("the API server answered with something other than a JSON object")
    return decoded


def _workload_path(namespace: str, kind: str, name: str | None) -> str:
    collection = f"/apis/apps/v1/namespaces/{checked_name('namespace', namespace)}/{WORKLOAD_RESOURCES[kind]}"
    return collection if name is None else f"{collection}/{checked_name(kind, name)}"


def _secret_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{checked_name('namespace', namespace)}/secrets/{checked_name('Secret', name)}"


def _status_reason(error: ApiException) -> str:
    """The API server's own Status message: it names the field or the conflict, never Secret data."""
    try:
        status = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        status = {}
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return str(status["message"])[:300]
    return str(error.reason or "")
