"""Leader election on a coordination.k8s.io Lease, so two replicas give one active operator.

The standby only competes for the Lease; it starts kopf once it holds it. Like client-go,
expiry is judged by when this process last saw the Lease change (a monotonic clock), not by
the holder's timestamps, so clock skew between nodes cannot cause two leaders.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from .kube import RawApi

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseTimings:
    duration: float = 15.0
    """How long a standby waits after the last renewal it saw before taking over."""
    renew_deadline: float = 10.0
    """A leader that could not renew for this long stops working, before anyone may take over."""
    retry_period: float = 2.0


def _micro_time() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        api_client: Any,
        namespace: str,
        name: str,
        identity: str,
        timings: LeaseTimings = LeaseTimings(),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = RawApi(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.timings = timings
        self._monotonic = monotonic
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._last_renewed = 0.0
        self.connected = asyncio.Event()
        """Set after the first successful API round trip: the standby is healthy and ready."""

    @property
    def _path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"

    async def acquire(self) -> None:
        """Return once this process holds the Lease."""
        logger.info("waiting to become leader on Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while True:
            if await self._try_acquire_or_renew():
                break
            await asyncio.sleep(self.timings.retry_period)
        logger.info("became leader on Lease %s/%s", self.namespace, self.name)

    async def hold(self) -> None:
        """Keep renewing; return when leadership is lost (renewals failed past the deadline)."""
        while True:
            await asyncio.sleep(self.timings.retry_period)
            if await self._try_acquire_or_renew():
                continue
            if self._monotonic() - self._last_renewed > self.timings.renew_deadline:
                logger.error("lost the Lease %s/%s; stopping", self.namespace, self.name)
                return

    async def release(self) -> None:
        """Hand over at once on a clean shutdown instead of making the standby wait out the Lease."""
        try:
            lease = await asyncio.to_thread(self._api.json, "GET", self._path)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            lease["spec"] = {
                **spec,
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "renewTime": _micro_time(),
            }
            await asyncio.to_thread(self._api.json, "PUT", self._path, body=lease)
            logger.info("released the Lease %s/%s", self.namespace, self.name)
        except (ApiException, OSError, ValueError) as error:
            logger.warning("could not release the Lease: %s", type(error).__name__)

    async def _try_acquire_or_renew(self) -> bool:
        try:
            return await asyncio.to_thread(self._attempt)
        except ApiException as error:
            if error.status == 409:  # someone else wrote the Lease first
                return False
            logger.warning("Lease %s/%s: HTTP %s %s", self.namespace, self.name, error.status, error.reason)
            return False
        except (OSError, ValueError) as error:
            logger.warning("Lease %s/%s: %s", self.namespace, self.name, type(error).__name__)
            return False

    def _attempt(self) -> bool:
        now = self._monotonic()
        try:
            lease = self._api.json("GET", self._path)
        except ApiException as error:
            if error.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(acquire_time=None, transitions=0),
            }
            collection = self._path.rsplit("/", 1)[0]
            self._api.json("POST", collection, body=body)
            self._won(now)
            return True
        self.connected.set()
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        record = (
            holder,
            spec.get("renewTime"),
            spec.get("leaseDurationSeconds"),
            spec.get("leaseTransitions"),
        )
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = spec.get("leaseDurationSeconds") or self.timings.duration
        if holder and holder != self.identity and now < self._observed_at + duration:
            return False
        transitions = (spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        keep = spec.get("acquireTime") if holder == self.identity else None
        lease["spec"] = self._spec(acquire_time=keep, transitions=transitions)
        self._api.json("PUT", self._path, body=lease)
        self._won(now)
        return True

    def _spec(self, acquire_time: str | None, transitions: int) -> dict[str, Any]:
        now = _micro_time()
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.timings.duration),
            "acquireTime": acquire_time or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def _won(self, now: float) -> None:
        self.connected.set()
        self._last_renewed = now
