"""A real Prometheus scrapes the operator and evaluates manifests/monitoring/'s rules.

With one-minute tokens and the Auth API down, SimacanTokenExpiresSoon fires within the last sixth
of the token's life, before it expires, and resolves once the Auth API is back and the operator's
retry writes a new token. The rules file is extracted from the PrometheusRule as kustomize renders
it; the job name and labels are those the ServiceMonitor gives the scrape.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from localenv.controlplane import ControlPlane
from localenv.fakeauth import ENDPOINTS, FakeAuthAPI, Fault
from localenv.k8s import Namespace
from localenv.polling import eventually
from tests.conftest import SUMMARY, Issue
from tests.e2e.conftest import OPERATOR_NAMESPACE, REPO, kubectl
from tests.static.monitoring import METRICS_JOB, dashboard, dashboard_queries, rendered, write_rules_file
from tests.support.prometheus import Prometheus, running_prometheus


@pytest.fixture
def prometheus_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    yield directory
    # pytest shows this only when the test fails.
    log = directory / "prometheus.log"
    if log.exists():
        print(f"----- prometheus.log (last 6000 chars)\n{log.read_text(errors='replace')[-6000:]}")


def one_alert(prometheus: Prometheus, alertname: str, ns: Namespace, state: str) -> dict[str, Any] | None:
    """The credential's alert in `state`: its own namespace label, not the operator's, as in a cluster."""
    for alert in prometheus.alerts(alertname):
        labels = alert["labels"]
        if (labels.get("namespace"), labels.get("name"), alert["state"]) == (ns.name, "fleet-api", state):
            return alert
    return None


def assert_rendered(alert: dict[str, Any], ns: Namespace) -> None:
    """The templates filled in: the credential named, nothing left unexpanded."""
    annotations = alert["annotations"]
    assert set(annotations) == {"summary", "description", "runbook"}
    assert f"{ns.name}/fleet-api" in annotations["summary"]
    for text in annotations.values():
        assert "{{" not in text and "<no value>" not in text, text


def test_expiring_soon_fires_while_the_auth_api_is_down_and_resolves_after_recovery(
    ns: Namespace, fake_auth: FakeAuthAPI, issue: Issue, prometheus_dir: Path
) -> None:
    assert fake_auth.access_lifetime == 60
    issued = issue()
    expires_at = ns.credential("fleet-api")["status"]["expiresAt"]
    for endpoint in ENDPOINTS:
        fake_auth.set_fault(endpoint, Fault.http_error(503))
    rules = write_rules_file(prometheus_dir)
    with running_prometheus(
        prometheus_dir,
        rules,
        job=METRICS_JOB,
        targets=[f"127.0.0.1:{issued.operator.metrics_port}"],
        target_labels={"namespace": OPERATOR_NAMESPACE},
    ) as prometheus:
        # Rules are evaluated from the start, before the first scrape: the absence alert clears
        # once the operator's simacan_leader 1 is in.
        eventually(
            lambda: (
                prometheus.target_health() == ["up"] and not prometheus.alerts("SimacanTokenOperatorAbsent")
            ),
            timeout=15,
            what="operator scraped and present",
        )

        # The refresh at two thirds fails: RefreshFailing goes pending (it fires after 10 minutes).
        pending = eventually(
            lambda: one_alert(prometheus, "SimacanTokenRefreshFailing", ns, "pending"),
            timeout=60,
            what="SimacanTokenRefreshFailing pending",
        )
        assert_rendered(pending, ns)

        # Under a sixth of the lifetime left (10 s) with no refresh on the way: it fires at once.
        firing = eventually(
            lambda: one_alert(prometheus, "SimacanTokenExpiresSoon", ns, "firing"),
            timeout=30,
            what="SimacanTokenExpiresSoon firing",
        )
        assert_rendered(firing, ns)
        # Not earlier than a sixth of the lifetime before expiry (plus 1 s for the status' rounding),
        # and before the token expires: that is the alert's point.
        fired_at = datetime.fromisoformat(firing["activeAt"])
        lead = (datetime.fromisoformat(expires_at) - fired_at).total_seconds()
        assert 0 < lead <= 11, f"fired {lead:.1f}s before expiry"
        assert float(firing["value"]) < 10  # seconds left, as the summary shows them
        assert ns.secret_text("fleet-api", "token") == issued.token

        # The Auth API recovers; the operator's next retry (backoff, nothing forced) replaces the token.
        fake_auth.clear_faults()
        eventually(
            lambda: ns.secret_text("fleet-api", "token") != issued.token, timeout=60, what="a new token"
        )
        recovered = time.monotonic()
        eventually(
            lambda: (
                not prometheus.alerts("SimacanTokenExpiresSoon")
                and not prometheus.alerts("SimacanTokenRefreshFailing")
            ),
            timeout=15,
            what="the alerts resolved",
        )
        SUMMARY.append(
            f"e2e: Prometheus fired SimacanTokenExpiresSoon {lead:.1f}s before a 60s token expired, "
            f"and resolved it {time.monotonic() - recovered:.1f}s after the new token was written"
        )

        # Every dashboard panel has data from this operator.
        variables = {"namespace": ns.name, "job": METRICS_JOB, "__rate_interval": "15s"}
        for title, expr in dashboard_queries(dashboard(), variables):
            assert prometheus.query(expr), f"dashboard panel {title!r} is empty: {expr}"

        # The operator stops: no active replica is scraped, and the absence alert is pending.
        issued.operator.stop()
        eventually(
            lambda: [a["state"] for a in prometheus.alerts("SimacanTokenOperatorAbsent")] == ["pending"],
            timeout=15,
            what="SimacanTokenOperatorAbsent pending",
        )


def prometheus_operator_crds() -> Path:
    script = REPO / "localenv" / "prometheus-operator-crds.sh"
    result = subprocess.run([str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{script.name} failed:\n{result.stderr}"
    return Path(result.stdout.strip())


def test_monitoring_manifests_install_where_the_prometheus_operator_crds_are(installed: ControlPlane) -> None:
    """`kubectl apply -k manifests/monitoring/` against the real CRD schemas, with strict field
    validation (kubectl's default): a misspelt or misplaced field would be refused, not pruned."""
    crds = prometheus_operator_crds()
    kinds = {"prometheusrules": "PrometheusRule", "servicemonitors": "ServiceMonitor"}
    for plural in kinds:
        crd = crds / f"monitoring.coreos.com_{plural}.yaml"
        kubectl(installed, "apply", "--server-side", "-f", str(crd))
    for plural in kinds:
        kubectl(installed, "wait", "--for=condition=Established", f"crd/{plural}.monitoring.coreos.com")

    kubectl(installed, "apply", "-k", str(REPO / "manifests" / "monitoring"))

    expected = {(o["kind"], o["metadata"]["name"]): o for o in rendered()}
    for plural, kind in kinds.items():
        listed = kubectl(installed, "get", plural, "-n", OPERATOR_NAMESPACE, "-o", "json")
        (stored,) = json.loads(listed)["items"]
        want = expected[(kind, stored["metadata"]["name"])]
        assert stored["spec"] == want["spec"], f"{kind} changed on the way in"

    # The schema is enforced: the same ServiceMonitor with a misspelt field is refused.
    monitor = copy.deepcopy(expected[("ServiceMonitor", "simacan-token-operator")])
    monitor["spec"]["endpoints"][0]["honourLabels"] = True
    refused = subprocess.run(
        ["kubectl", "--kubeconfig", str(installed.admin_kubeconfig), "apply", "--dry-run=server", "-f", "-"],
        input=json.dumps(monitor),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0 and "honourLabels" in refused.stderr, refused.stderr
