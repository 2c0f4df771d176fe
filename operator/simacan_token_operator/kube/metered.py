"""Counting the operator's own Kubernetes requests by verb, resource and answer.

Every request the operator sends (Calls, the metadata watches, the Lease) is built by one
kubernetes ApiClient; this subclass of it reports each request as it is answered (Calls send
theirs on aiohttp, transport.py, and report through it too), so that users
can check the requests per Secret write in production. kopf's own requests (its watches of the
credentials) use kopf's aiohttp session and are not counted: they are kopf's, not ours.

The kube layer knows no metrics library: it reports to a callback that the app layer gives it.
Labels have few values: the verb as the API server's audit log names it, the resource from a
fixed list ("other" for anything else), and the HTTP status or "error" when no answer came.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Protocol

from kubernetes import client

RESOURCES = frozenset(
    {
        "secrets",
        "simacancredentials",
        "clustersimacancredentials",
        "events",
        "leases",
        "deployments",
        "statefulsets",
        "daemonsets",
        "namespaces",
    }
)
SUBRESOURCES = frozenset({"status"})
TRANSPORT_ERROR = "error"
_WRITE_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


class RequestObserver(Protocol):
    def __call__(self, verb: str, resource: str, code: str) -> None:
        """One request answered with HTTP `code`, or "error" when the transport failed."""


def request_labels(method: str, url: str, prefix: str = "") -> tuple[str, str]:
    """(verb, resource) of a request, as kube-apiserver's request info names them.

    `prefix` is the path of the configured host (an API server behind a path-routing proxy)."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path.removeprefix(prefix.rstrip("/"))
    segments = [segment for segment in path.split("/") if segment]
    if segments[:1] == ["api"]:
        rest = segments[2:]
    elif segments[:1] == ["apis"]:
        rest = segments[3:]
    else:
        return method.lower(), "other"
    if rest[:1] == ["namespaces"] and len(rest) >= 3 and rest[2] not in SUBRESOURCES:
        rest = rest[2:]  # a namespaced resource: drop namespaces/NAME
    resource, sub = (rest[0] if rest else ""), (rest[2] if len(rest) > 2 else "")
    if resource not in RESOURCES or (sub and sub not in SUBRESOURCES) or len(rest) > 3:
        label = "other"
    else:
        label = f"{resource}/{sub}" if sub else resource
    return _verb(method, len(rest) > 1, urllib.parse.parse_qs(parts.query)), label


def _verb(method: str, named: bool, query: dict[str, list[str]]) -> str:
    if method == "GET":
        if query.get("watch", [""])[0].lower() in ("true", "1"):
            return "watch"
        return "get" if named else "list"
    if method == "DELETE" and not named:
        return "deletecollection"
    return _WRITE_VERBS.get(method, method.lower())


class MeteredApiClient(client.ApiClient):
    """An ApiClient that reports every request it sends to `observe` (counted once it is
    answered or has failed; a watch once its stream has opened)."""

    def __init__(self, configuration: client.Configuration, observe: RequestObserver) -> None:
        super().__init__(configuration)
        self._observe = observe
        self._prefix = urllib.parse.urlsplit(configuration.host or "").path

    def call_api(
        self,
        method: str,
        url: str,
        header_params: Any = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        try:
            response = super().call_api(method, url, header_params, body, post_params, _request_timeout)
        except Exception:
            self.report(method, url, TRANSPORT_ERROR)
            raise
        self.report(method, url, str(response.status))
        return response

    def report(self, method: str, url: str, code: str) -> None:
        """Count one request; also for those sent on another transport (transport.py)."""
        verb, resource = request_labels(method, url, self._prefix)
        self._observe(verb, resource, code)
