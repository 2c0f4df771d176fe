"""The coordination.k8s.io Lease that leader election reads and writes; blocking calls, for a thread.

When to write is the elector's to decide (leader.py); this keeps the Lease's fields as client-go
keeps them: acquireTime stays while the holder does, leaseTransitions counts changes of holder,
every write carries the resourceVersion read (a concurrent writer gets 409), and a released
Lease names no holder and lasts one second, so a standby takes it at once.
"""

from __future__ import annotations

import datetime
from typing import Any

from simacan_token_operator.kube.client import RawApi

Timeout = tuple[float, float]
"""(connect, read) seconds for one request."""


def _micro_time() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseClient:
    def __init__(self, api_client: Any, namespace: str, name: str, identity: str, duration: float) -> None:
        self._api = RawApi(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration = duration

    @property
    def _path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"

    def get(self, timeout: Timeout) -> dict[str, Any]:
        """The Lease as stored; ApiException 404 when there is none yet."""
        return self._api.json("GET", self._path, timeout=timeout)

    def create(self, timeout: Timeout) -> None:
        """A new Lease held by this process."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": self._spec(acquire_time=None, transitions=0),
        }
        collection = self._path.rsplit("/", 1)[0]
        self._api.json("POST", collection, body=body, timeout=timeout)

    def take(self, lease: dict[str, Any], timeout: Timeout) -> None:
        """Write `lease` (as read) back held by this process: a renewal if it held it, else a take-over."""
        spec = lease.get("spec") or {}
        ours = spec.get("holderIdentity") == self.identity
        transitions = (spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        keep = spec.get("acquireTime") if ours else None
        lease["spec"] = self._spec(acquire_time=keep, transitions=transitions)
        self._api.json("PUT", self._path, body=lease, timeout=timeout)  # carries resourceVersion

    def held_by_us(self, lease: dict[str, Any]) -> bool:
        return (lease.get("spec") or {}).get("holderIdentity") == self.identity

    def hand_back(self, lease: dict[str, Any], timeout: Timeout) -> None:
        """Write `lease` (as read) back with no holder and a one-second duration."""
        lease["spec"] = {
            **(lease.get("spec") or {}),
            "holderIdentity": None,
            "leaseDurationSeconds": 1,
            "renewTime": _micro_time(),
        }
        self._api.json("PUT", self._path, body=lease, timeout=timeout)

    def _spec(self, acquire_time: str | None, transitions: int) -> dict[str, Any]:
        now = _micro_time()
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "acquireTime": acquire_time or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }
