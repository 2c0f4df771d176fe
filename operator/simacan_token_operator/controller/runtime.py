"""What every worker shares (the Kubernetes seam, the token pool, the rules, the gates) and the
one place a token Secret is written."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from simacan_token_operator.controller.gates import KubeGates
from simacan_token_operator.controller.known import Knowledge
from simacan_token_operator.controller.news import News
from simacan_token_operator.controller.startgate import StartGate
from simacan_token_operator.controller.workloads import NamespaceWorkloads, WorkloadReader
from simacan_token_operator.kube.client import KubeError, ObjectRef
from simacan_token_operator.model.clusterspec import DEFAULT_CREDENTIALS_NAMESPACE
from simacan_token_operator.model.spec import AuthURLPolicy
from simacan_token_operator.reconcile.decide import REFUSED_WRITE_STATUSES, Result, Services, TokenSource
from simacan_token_operator.reconcile.report import MetricsSink
from simacan_token_operator.reconcile.tokensecret import rfc3339

logger = logging.getLogger(__name__)

CONFLICT_RETRY_SECONDS = 0.5
"""After a 404 or 409 on a write another writer was quicker: read again shortly."""


class WriteRefused(Exception):
    """The API server refused the token Secret for what it holds; `message` names the call and why."""

    def __init__(self, error: KubeError) -> None:
        super().__init__(str(error))
        self.message = str(error)


async def write_secret(
    kube: KubeSeam, namespace: str, result: Result, who: str
) -> tuple[bool, dict[str, Any] | None]:
    """Create or replace the token Secret a pass asked for: (done, the Secret as written, if it
    was). Not done if another writer got there first (404 or 409: look again shortly);
    WriteRefused if the API server refused its content."""
    write = result.write
    if write is None:
        return True, None
    try:
        if write.create:
            written = await kube.create_secret(namespace, write.body)
        else:
            written = await kube.replace_secret(namespace, write.body)
    except KubeError as error:
        if error.status in (404, 409):
            return False, None
        if error.status in REFUSED_WRITE_STATUSES:
            raise WriteRefused(error) from None
        raise
    token = result.outcome.token
    logger.info(
        "%s: wrote Secret %s/%s (%s); valid until %s",
        who,
        namespace,
        write.body["metadata"]["name"],
        write.reason,
        rfc3339(token.expires_at) if token else "?",
    )
    return True, written


class KubeSeam(WorkloadReader, Protocol):
    """The Kubernetes calls a worker makes; kube.Kube implements them over HTTP, tests over a dict."""

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...
    async def replace_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...
    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]: ...
    async def delete_secret(self, namespace: str, name: str, uid: str) -> None: ...
    async def namespaces_holding(self, owner_uid: str) -> set[str]: ...
    async def post_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None: ...
    async def read_workload(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None: ...
    async def restart_workload(
        self, namespace: str, kind: str, name: str, resource_version: str, annotation: str, value: str
    ) -> None: ...


@dataclass
class Runtime:
    """What every worker shares."""

    kube: KubeSeam
    pool: TokenSource
    auth_policy: AuthURLPolicy
    metrics: MetricsSink
    clock: Callable[[], float] = time.time
    cluster_credentials_namespace: str = DEFAULT_CREDENTIALS_NAMESPACE
    """The one namespace ClusterSimacanCredentials may read credentials Secrets from."""
    gates: KubeGates = field(default_factory=KubeGates)
    """Bound concurrent Kubernetes calls, in all and per namespace (gates.py): a start with
    thousands of credentials stays a steady trickle instead of a burst that inflates memory for
    good, passes go before status patches. Never held while waiting for the Auth API, so a slow
    login source cannot hold up anyone else."""
    workloads: NamespaceWorkloads | None = None
    """Set by __post_init__: each namespace's workload verdicts, for the stale-consumer check."""
    known: Knowledge = field(default_factory=Knowledge)
    """What the Secret watch vouches for, so passes need not read it again (known.py)."""
    start_gate: StartGate = field(default_factory=StartGate)
    """Held while kopf hands over the credentials listed at start: no worker begins before (startgate.py)."""
    news: News = field(init=False)
    """Posts the credentials' Events: Normal ones within each namespace's budget, after the
    statuses in a wave (news.py)."""

    def __post_init__(self) -> None:
        if self.workloads is None:
            self.workloads = NamespaceWorkloads(self.kube, self.clock)
        self.news = News(self.kube, self.gates, time.monotonic)  # a wall-clock step must not silence them

    @property
    def services(self) -> Services:
        return Services(self.pool, self.auth_policy, self.clock)
