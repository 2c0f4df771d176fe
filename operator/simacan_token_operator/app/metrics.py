"""Prometheus metrics. One registry per operator so tests can run several side by side."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from simacan_token_operator.reconcile.status import Outcome

LABELS = ("namespace", "name")


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.expiry = Gauge(
            "simacan_token_expiry_timestamp_seconds",
            "Unix time at which the token in the credential's Secret expires.",
            LABELS,
            registry=r,
        )
        self.next_refresh = Gauge(
            "simacan_token_next_refresh_timestamp_seconds",
            "Unix time of the credential's next planned refresh.",
            LABELS,
            registry=r,
        )
        self.ready = Gauge(
            "simacan_credential_ready",
            "1 while the credential's Secret holds an unexpired token, else 0.",
            LABELS,
            registry=r,
        )
        self.issued = Gauge(
            "simacan_token_issued_timestamp_seconds",
            "Unix time at which the token in the credential's Secret was obtained; with the expiry it "
            "gives the lifetime, so alert thresholds can be a share of it.",
            LABELS,
            registry=r,
        )
        self.failing = Gauge(
            "simacan_credential_failing",
            "1 while the credential's last pass ended in a problem (refresh failing, bad spec or "
            "Secret), even while an older token is still valid; else 0.",
            LABELS,
            registry=r,
        )
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
        labels = (namespace, name)
        self.ready.labels(*labels).set(1 if outcome.ready else 0)
        self.failing.labels(*labels).set(1 if outcome.failure else 0)
        if outcome.token is not None:
            self.expiry.labels(*labels).set(outcome.token.expires_at)
            self.issued.labels(*labels).set(outcome.token.obtained_at)
        if outcome.next_refresh is not None:
            self.next_refresh.labels(*labels).set(outcome.next_refresh)
        if attempt is not None:
            self.count_attempt(attempt)

    def count_attempt(self, attempt: str) -> None:
        self.refreshes.labels(attempt).inc()

    def forget(self, namespace: str, name: str) -> None:
        """A deleted credential's series disappear instead of going stale."""
        for gauge in (self.expiry, self.next_refresh, self.ready, self.issued, self.failing):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
