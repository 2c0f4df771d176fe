"""manifests/monitoring/ as Prometheus and Grafana read it, for the static and end-to-end tests.

The rules come from the PrometheusRule that `kubectl apply -k manifests/monitoring/` installs,
written out as a plain rules file: what promtool and a real Prometheus evaluate is what users get,
and there is no second copy of the rules to drift.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from simacan_token_operator.app.metrics import Metrics
from tests.static.tools import REPO_ROOT, kustomize, require_tool

MONITORING_DIR = REPO_ROOT / "manifests" / "monitoring"
DASHBOARD_FILE = MONITORING_DIR / "dashboards" / "simacan-token-operator.json"
RULES_FILE_NAME = "simacan-token-operator.rules.yaml"
METRICS_JOB = "simacan-token-operator-metrics"
"""The job the ServiceMonitor gives the scrape: the Prometheus Operator names it after the Service."""

Manifest = dict[str, Any]
_METRIC_NAME = re.compile(r"\bsimacan_[a-z_]+\b")


def rendered() -> list[Manifest]:
    """What `kubectl apply -k manifests/monitoring/` sends (a fresh copy each call)."""
    return [doc for doc in yaml.safe_load_all(_rendered_text()) if doc]


@functools.cache
def _rendered_text() -> str:
    return kustomize(MONITORING_DIR)


def one(objects: list[Manifest], kind: str) -> Manifest:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def rule_groups(objects: list[Manifest]) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = one(objects, "PrometheusRule")["spec"]["groups"]
    return groups


def alerting_rules(objects: list[Manifest]) -> list[dict[str, Any]]:
    return [rule for group in rule_groups(objects) for rule in group["rules"] if "alert" in rule]


def write_rules_file(directory: Path, *, without_annotations: bool = False) -> Path:
    """The PrometheusRule's spec.groups as a Prometheus rules file in `directory`.

    `without_annotations` serves `promtool test rules`, which compares annotations verbatim: the
    cases test when alerts fire; `promtool check rules` and the e2e test cover the annotations.
    """
    groups = rule_groups(rendered())
    if without_annotations:
        for group in groups:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path = directory / RULES_FILE_NAME
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return loaded


def dashboard_queries(board: dict[str, Any], variables: Mapping[str, str]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query, with Grafana's variables replaced by `variables`."""
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in variables.items():
                expr = expr.replace(f"${name}", value)
            assert "$" not in expr, f"panel {panel['title']!r}: unreplaced variable in {expr}"
            queries.append((panel["title"], expr))
    return queries


def metric_names(text: str) -> set[str]:
    return set(_METRIC_NAME.findall(text))


def exported_metric_names() -> set[str]:
    """Every series name the operator can export, with the suffixes Prometheus sees."""
    registry = CollectorRegistry()
    Metrics(registry)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = require_tool("promtool", "PROMTOOL_BIN", "bash localenv/install-deps.sh (Debian's prometheus)")
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=60, check=False)
