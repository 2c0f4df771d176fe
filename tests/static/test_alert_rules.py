"""The alert rules in manifests/monitoring/prometheusrule.yaml, checked and unit-tested by promtool.

`promtool test rules` runs the cases in alert_rules_test.yaml (one-hour tokens, evaluated every
minute) and alert_rules_short_tokens_test.yaml (30-second tokens, every second) on
the rule groups extracted from the PrometheusRule as kustomize renders it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.static.monitoring import (
    RULES_FILE_NAME,
    alerting_rules,
    exported_metric_names,
    metric_names,
    promtool,
    rendered,
    write_rules_file,
)

HERE = Path(__file__).parent
CASES = [HERE / "alert_rules_test.yaml", HERE / "alert_rules_short_tokens_test.yaml"]
ALERTS = {
    "SimacanTokenExpiresSoon",
    "SimacanTokenRefreshFailing",
    "SimacanCredentialNotReady",
    "SimacanTokenOperatorAbsent",
}


def run_cases(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """promtool resolves a test file's rule_files beside it: copy the cases next to the extracted rules."""
    for case in CASES:
        assert yaml.safe_load(case.read_text())["rule_files"] == [RULES_FILE_NAME]
        shutil.copy(case, tmp_path / case.name)
    return promtool("test", "rules", *(tmp_path / case.name for case in CASES))


def test_rules_and_their_templates_are_valid(tmp_path: Path) -> None:
    result = promtool("check", "rules", write_rules_file(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_alerts_fire_and_resolve_as_the_cases_say(tmp_path: Path) -> None:
    write_rules_file(tmp_path, without_annotations=True)
    result = run_cases(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(CASES)


def test_a_changed_threshold_fails_the_cases(tmp_path: Path) -> None:
    """Guards the test above against passing vacuously: a fifth instead of a sixth must be caught."""
    rules = write_rules_file(tmp_path, without_annotations=True)
    text = rules.read_text()
    sixth = re.compile(r"\) / 6\b")
    assert len(sixth.findall(text)) == 1
    rules.write_text(sixth.sub(") / 5", text))
    result = run_cases(tmp_path)
    assert result.returncode != 0
    assert "SimacanTokenExpiresSoon" in result.stdout + result.stderr


def test_every_alert_says_what_happened_how_bad_and_what_to_do() -> None:
    rules = alerting_rules(rendered())
    assert {rule["alert"] for rule in rules} == ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        annotations: dict[str, Any] = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook"}, rule["alert"]
        assert all(text.strip() for text in annotations.values()), rule["alert"]
        if rule["alert"] != "SimacanTokenOperatorAbsent":
            # Per credential: say which one, and how to look at it.
            assert "{{ $labels.namespace }}/{{ $labels.name }}" in annotations["summary"]
            assert "kubectl describe simacancredential" in annotations["runbook"]


def test_rules_use_only_metrics_the_operator_exports() -> None:
    """A misspelt metric makes an alert that never fires, silently."""
    used = set().union(*(metric_names(rule["expr"]) for rule in alerting_rules(rendered())))
    assert used, "no rule names a simacan_ metric"
    assert used <= exported_metric_names(), used - exported_metric_names()


def test_token_thresholds_are_shares_of_the_lifetime() -> None:
    """No absolute seconds in the expiring-soon rule, and no `for:` that short tokens cannot meet."""
    (rule,) = [r for r in alerting_rules(rendered()) if r["alert"] == "SimacanTokenExpiresSoon"]
    assert "for" not in rule
    assert "simacan_token_issued_timestamp_seconds" in rule["expr"]
    assert not re.search(r"[<>] *[0-9]", rule["expr"]), "compare with a share of the lifetime, not seconds"


@pytest.mark.parametrize("kind", ["PrometheusRule", "ServiceMonitor"])
def test_default_install_does_not_need_the_prometheus_operator(kind: str, install_yaml: str) -> None:
    """`kubectl apply -k manifests/` must work on a cluster without the monitoring.coreos.com CRDs."""
    kinds = {doc["kind"] for doc in yaml.safe_load_all(install_yaml) if doc}
    assert kind not in kinds
    assert kind in {doc["kind"] for doc in rendered()}
