"""Prometheus metrics. One registry per operator so tests can run several side by side."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from simacan_token_operator.reconcile.status import Outcome

LABELS = ("namespace", "name")

CREDENTIAL_GAUGES = (
    (
        "expiry",
        "simacan_token_expiry_timestamp_seconds",
        "Unix time at which the token in the credential's Secret expires.",
    ),
    (
        "next_refresh",
        "simacan_token_next_refresh_timestamp_seconds",
        "Unix time of the credential's next planned refresh.",
    ),
    (
        "ready",
        "simacan_credential_ready",
        "1 while the credential's Secret holds an unexpired token, else 0.",
    ),
    (
        "issued",
        "simacan_token_issued_timestamp_seconds",
        "Unix time at which the token in the credential's Secret was obtained; with the expiry it "
        "gives the lifetime, so alert thresholds can be a share of it.",
    ),
    (
        "failing",
        "simacan_credential_failing",
        "1 while the credential's last pass ended in a problem (refresh failing, bad spec or "
        "Secret), even while an older token is still valid; else 0.",
    ),
)
"""(field of Published, metric name, help): one series of each per credential."""


@dataclass(slots=True)
class Published:
    """What the gauges of one credential show; None: not known yet (no series)."""

    ready: float
    failing: float
    expiry: float | None = None
    issued: float | None = None
    next_refresh: float | None = None


class CredentialGauges(Collector):
    """The per-credential gauges, made at scrape time from one small record per credential.

    prometheus_client's labelled children cost about 3.6 KiB per credential for five gauges
    (a metric object with its own dict, value and lock each): 36 MiB at 10,000 credentials,
    a quarter of what the operator adds to an idle kopf process. A record costs a tenth of that.
    cert-manager's per-certificate metrics are made the same way, from its cache at scrape time."""

    def __init__(self) -> None:
        self.published: dict[tuple[str, str], Published] = {}

    def publish(self, namespace: str, name: str, outcome: Outcome) -> None:
        """A value once known stays until a newer one comes, as a labelled gauge's would."""
        record = self.published.get((namespace, name))
        if record is None:
            record = self.published[(namespace, name)] = Published(0.0, 0.0)
        record.ready = 1.0 if outcome.ready else 0.0
        record.failing = 1.0 if outcome.failure else 0.0
        if outcome.token is not None:
            record.expiry = outcome.token.expires_at
            record.issued = outcome.token.obtained_at
        if outcome.next_refresh is not None:
            record.next_refresh = outcome.next_refresh

    def forget(self, namespace: str, name: str) -> None:
        self.published.pop((namespace, name), None)

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        for (namespace, name), record in list(self.published.items()):
            labels = (namespace, name)
            for family, (attribute, _, _) in zip(families, CREDENTIAL_GAUGES, strict=True):
                value = getattr(record, attribute)
                if value is not None:
                    family.add_metric(labels, value)
        return families

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(metric, help_, labels=LABELS) for _, metric, help_ in CREDENTIAL_GAUGES]


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    credentials: CredentialGauges = field(default_factory=CredentialGauges)

    def __post_init__(self) -> None:
        r = self.registry
        r.register(self.credentials)
        self.refreshes = Counter(
            "simacan_token_refresh_attempts",
            "Attempts to obtain a token for a credential, by result.",
            ("result",),
            registry=r,
        )
        self.leader = Gauge(
            "simacan_leader",
            "1 on the replica that is active (holds the Lease, or runs without leader election), else 0.",
            registry=r,
        )
        self.requests = Histogram(
            "simacan_auth_api_request_duration_seconds",
            "Auth API request duration by endpoint and outcome (HTTP status, timeout, unreachable).",
            ("endpoint", "status"),
            registry=r,
        )
        self.kube_requests = Counter(
            "simacan_kube_requests",
            "The operator's own Kubernetes API requests (kopf's watches of the credentials not "
            "included) by verb, resource and HTTP status, or 'error' when no answer came.",
            ("verb", "resource", "code"),
            registry=r,
        )

        self.refresh_advanced = Counter(
            "simacan_refresh_advanced",
            "Shared refreshes started earlier than planned because the wave of Secret writes for "
            "all the account's credentials would not have landed 5 s before the token expired at "
            "the write rate measured (busy CPUs, a slow API server).",
            registry=r,
        )

    def count_refresh_advanced(self) -> None:
        """auth.pool.TokenPool's on_advanced: an account's refresh wave was moved earlier."""
        self.refresh_advanced.inc()

    def count_kube_request(self, verb: str, resource: str, code: str) -> None:
        """kube.metered.RequestObserver: one of the operator's own Kubernetes API requests."""
        self.kube_requests.labels(verb, resource, code).inc()

    def observe_request(self, endpoint: str, status: str, seconds: float) -> None:
        self.requests.labels(endpoint, status).observe(seconds)

    def publish(self, namespace: str, name: str, outcome: Outcome, attempt: str | None) -> None:
        self.credentials.publish(namespace, name, outcome)
        if attempt is not None:
            self.count_attempt(attempt)

    def count_attempt(self, attempt: str) -> None:
        self.refreshes.labels(attempt).inc()

    def forget(self, namespace: str, name: str) -> None:
        """A deleted credential's series disappear instead of going stale."""
        self.credentials.forget(namespace, name)
