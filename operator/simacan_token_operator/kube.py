"""Kubernetes I/O for the reconciler: Secrets, the status subresource and Events.

The official client is synchronous; every call runs in the default thread pool so the
event loop never blocks. Bodies are plain dicts (raw JSON). Nothing here logs a body:
Secrets pass through.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
    ) -> Any:
        """Send one request; returns the client's RESTResponse, raises ApiException on non-2xx."""
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
        response = self._client.call_api(*params)
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
    def __init__(self, api_client: Any) -> None:
        self._api = RawApi(api_client)

    async def _call(self, action: str, method: str, path: str, **kwargs: Any) -> Body:
        try:
            return await asyncio.to_thread(self._api.json, method, path, **kwargs)
        except ApiException as error:
            raise KubeError(action, int(error.status or 0), _status_reason(error)) from None
        except (OSError, ValueError) as error:  # urllib3 connection errors derive from OSError
            raise KubeError(action, 0, type(error).__name__) from None

    async def read_secret(self, namespace: str, name: str) -> Body | None:
        try:
            return await self._call(
                f"reading Secret {namespace}/{name}", "GET", f"/api/v1/namespaces/{namespace}/secrets/{name}"
            )
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def create_secret(self, namespace: str, body: Body) -> Body:
        name = body["metadata"]["name"]
        return await self._call(
            f"creating Secret {namespace}/{name}",
            "POST",
            f"/api/v1/namespaces/{namespace}/secrets",
            body=body,
        )

    async def replace_secret(self, namespace: str, body: Body) -> Body:
        """Replace with the resourceVersion in `body`: a concurrent edit makes this fail with 409."""
        name = body["metadata"]["name"]
        return await self._call(
            f"replacing Secret {namespace}/{name}",
            "PUT",
            f"/api/v1/namespaces/{namespace}/secrets/{name}",
            body=body,
        )

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Body:
        return await self._call(
            f"updating the status of {namespace}/{name}",
            "PATCH",
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status",
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
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
            "POST",
            f"/api/v1/namespaces/{ref.namespace}/events",
            body=body,
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
