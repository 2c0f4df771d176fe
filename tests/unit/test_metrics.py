"""The per-credential gauges as Prometheus reads them: the exposition a scrape gets."""

from __future__ import annotations

import tracemalloc

from prometheus_client import generate_latest

from simacan_token_operator.app.metrics import CREDENTIAL_GAUGES, Metrics
from simacan_token_operator.model.tokens import TokenSet
from simacan_token_operator.reconcile.status import Outcome

TOKEN = TokenSet("not-a-real-token", None, obtained_at=1_800_000_000.0, expires_at=1_800_003_600.0)


def series(metrics: Metrics) -> list[str]:
    """The sample lines of the per-credential gauges, in exposition order."""
    names = tuple(metric for _, metric, _ in CREDENTIAL_GAUGES)
    return [
        line
        for line in generate_latest(metrics.registry).decode().splitlines()
        if line.startswith(names) and not line.startswith("#")
    ]


def test_a_credential_gets_five_series_with_its_labels() -> None:
    metrics = Metrics()
    outcome = Outcome(True, "TokenValid", "", TOKEN, next_refresh=1_800_002_400.0)
    metrics.publish("team-a", "fleet-api", outcome, None)

    assert series(metrics) == [
        'simacan_token_expiry_timestamp_seconds{name="fleet-api",namespace="team-a"} 1.8000036e+09',
        'simacan_token_next_refresh_timestamp_seconds{name="fleet-api",namespace="team-a"} 1.8000024e+09',
        'simacan_credential_ready{name="fleet-api",namespace="team-a"} 1.0',
        'simacan_token_issued_timestamp_seconds{name="fleet-api",namespace="team-a"} 1.8e+09',
        'simacan_credential_failing{name="fleet-api",namespace="team-a"} 0.0',
    ]
    exposition = generate_latest(metrics.registry).decode()
    assert "# TYPE simacan_credential_ready gauge" in exposition
    assert "# HELP simacan_credential_ready 1 while the credential's Secret holds" in exposition


def test_a_failed_pass_keeps_the_token_times_it_knew_and_a_forgotten_credential_has_no_series() -> None:
    metrics = Metrics()
    metrics.publish("team-a", "fleet-api", Outcome(True, "TokenValid", "", TOKEN), None)
    metrics.publish("team-a", "fleet-api", Outcome(True, "AuthUnavailable", "", None, failure=True), "error")
    metrics.publish("team-b", "other", Outcome(False, "SecretMissing", "", None, failure=True), None)

    sample = metrics.registry.get_sample_value
    assert sample("simacan_credential_failing", {"namespace": "team-a", "name": "fleet-api"}) == 1.0
    assert sample("simacan_token_expiry_timestamp_seconds", {"namespace": "team-a", "name": "fleet-api"}) == (
        TOKEN.expires_at
    ), "the token in the Secret is still the one it knew"
    assert sample("simacan_token_expiry_timestamp_seconds", {"namespace": "team-b", "name": "other"}) is None
    assert sample("simacan_credential_ready", {"namespace": "team-b", "name": "other"}) == 0.0

    metrics.forget("team-a", "fleet-api")
    assert [line for line in series(metrics) if "team-a" in line] == []
    assert len(series(metrics)) == 2, "team-b's ready and failing stay"


def test_the_series_of_a_credential_cost_a_record_not_a_metric_object_each() -> None:
    """prometheus_client's labelled children took about 3.6 KiB per credential for the five gauges."""
    metrics = Metrics()
    outcome = Outcome(True, "TokenValid", "", TOKEN, next_refresh=1_800_002_400.0)
    names = [f"cred-{i:05d}" for i in range(2000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for name in names:
            metrics.publish("bench", name, outcome, None)
        per_credential = (tracemalloc.get_traced_memory()[0] - before) / len(names)
    finally:
        tracemalloc.stop()
    assert per_credential < 1024, f"{per_credential:.0f} bytes per credential"
