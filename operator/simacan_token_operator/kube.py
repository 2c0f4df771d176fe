"""Kubernetes I/O for the reconciler: Secrets, the status subresource and Events.

The official client is synchronous; every call runs in the default thread pool so the
event loop never blocks. Bodies are plain dicts (raw JSON), which keeps memory small and
avoids the client's model classes. Nothing here logs a body: Secrets pass through.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .spec import GROUP, PLURAL, VERSION

COMPONENT = "simacan-token-operator"

Body = dict[str, Any]


class KubeError(Exception):
    """A Kubernetes API call failed; `status` is the HTTP code (0 for transport errors)."""

    def __init__(self, action: str, status: int, reason: str) -> None:
        super().__init__(f"{action} failed: HTTP {status} {reason}".strip())
        self.status = status


@dataclass(frozen=True)
class ObjectRef:
    """Enough of a SimacanCredential to own a Secret and to be named by an Event."""

    namespace: str
    name: str
    uid: str
    api_version: str
    kind: str


def _raw(response: Any) -> Body:
    decoded = json.loads(response.data)
    if not isinstance(decoded, dict):
        raise KubeError("decoding a response", 0, "not a JSON object")
    return decoded


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Kube:
    def __init__(self, api_client: Any) -> None:
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)

    async def _call(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Body:
        try:
            response = await asyncio.to_thread(fn, *args, _preload_content=False, **kwargs)
        except ApiException as error:
            reason = _status_reason(error)
            raise KubeError(action, int(error.status or 0), reason) from None
        except OSError as error:  # urllib3 connection errors derive from OSError
            raise KubeError(action, 0, type(error).__name__) from None
        return _raw(response)

    async def read_secret(self, namespace: str, name: str) -> Body | None:
        try:
            return await self._call(
                f"reading Secret {namespace}/{name}", self._core.read_namespaced_secret, name, namespace
            )
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def create_secret(self, namespace: str, body: Body) -> Body:
        name = body["metadata"]["name"]
        return await self._call(
            f"creating Secret {namespace}/{name}", self._core.create_namespaced_secret, namespace, body
        )

    async def replace_secret(self, namespace: str, body: Body) -> Body:
        """Replace with the resourceVersion in `body`: a concurrent edit makes this fail with 409."""
        name = body["metadata"]["name"]
        return await self._call(
            f"replacing Secret {namespace}/{name}",
            self._core.replace_namespaced_secret,
            name,
            namespace,
            body,
        )

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Body:
        return await self._call(
            f"updating the status of {namespace}/{name}",
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": dict(status)},
        )

    async def post_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        """Record an Event on the SimacanCredential, as `kubectl describe` shows it."""
        now = _now()
        body: Body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{ref.name}.{secrets.token_hex(8)}", "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": now[:19] + "Z",
            "lastTimestamp": now[:19] + "Z",
            "count": 1,
        }
        await self._call(
            f"posting an Event for {ref.namespace}/{ref.name}",
            self._core.create_namespaced_event,
            ref.namespace,
            body,
        )


def _status_reason(error: ApiException) -> str:
    """The API server's own Status message: it names the field or the conflict, never Secret data."""
    try:
        status = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        status = {}
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return str(status["message"])[:300]
    return str(error.reason or "")
