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

from kubernetes import client
from kubernetes.client.exceptions import ApiException

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseTimings:
    duration: float = 15.0
    """How long a standby waits after the last renewal it saw before taking over."""
    renew_deadline: float = 10.0
    """A leader that could not renew for this long stops working, before anyone may take over."""
    retry_period: float = 2.0


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


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
        self._api = client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.timings = timings
        self._monotonic = monotonic
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._last_renewed = 0.0
        self.connected = asyncio.Event()
        """Set after the first successful API round trip: the standby is healthy and ready."""

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
            lease = await asyncio.to_thread(self._api.read_namespaced_lease, self.name, self.namespace)
            spec = lease.spec
            if spec is None or spec.holder_identity != self.identity:
                return
            spec.holder_identity = None
            spec.lease_duration_seconds = 1
            spec.renew_time = _now()
            await asyncio.to_thread(self._api.replace_namespaced_lease, self.name, self.namespace, lease)
            logger.info("released the Lease %s/%s", self.namespace, self.name)
        except (ApiException, OSError) as error:
            logger.warning("could not release the Lease: %s", type(error).__name__)

    async def _try_acquire_or_renew(self) -> bool:
        try:
            return await asyncio.to_thread(self._attempt)
        except ApiException as error:
            if error.status == 409:  # someone else wrote the Lease first
                return False
            logger.warning("Lease %s/%s: HTTP %s %s", self.namespace, self.name, error.status, error.reason)
            return False
        except OSError as error:
            logger.warning("Lease %s/%s: %s", self.namespace, self.name, type(error).__name__)
            return False

    def _attempt(self) -> bool:
        now = self._monotonic()
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            lease = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(acquire=True, transitions=0),
            )
            self._api.create_namespaced_lease(self.namespace, lease)
            self._won(now)
            return True
        self.connected.set()
        spec = lease.spec or client.V1LeaseSpec()
        record = (spec.holder_identity, spec.renew_time, spec.lease_duration_seconds, spec.lease_transitions)
        if record != self._observed:
            self._observed, self._observed_at = record, now
        holder = spec.holder_identity
        duration = spec.lease_duration_seconds or self.timings.duration
        if holder and holder != self.identity and now < self._observed_at + duration:
            return False
        transitions = (spec.lease_transitions or 0) + (0 if holder == self.identity else 1)
        renewed = self._spec(acquire=holder != self.identity, transitions=transitions)
        if holder == self.identity:
            renewed.acquire_time = spec.acquire_time
        lease.spec = renewed
        self._api.replace_namespaced_lease(self.name, self.namespace, lease)
        self._won(now)
        return True

    def _spec(self, acquire: bool, transitions: int) -> Any:
        now = _now()
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=int(self.timings.duration),
            renew_time=now,
            acquire_time=now if acquire else None,
            lease_transitions=transitions,
        )

    def _won(self, now: float) -> None:
        self.connected.set()
        self._last_renewed = now
