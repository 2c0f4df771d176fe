"""manifests/monitoring/: the ServiceMonitor scrapes the operator's Service as the rules expect, and
the Grafana dashboard ships in the ConfigMap with queries that parse and name real metrics."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate  # type: ignore[import-untyped]
import yaml

from tests.static.conftest import load_all
from tests.static.monitoring import (
    DASHBOARD_FILE,
    METRICS_JOB,
    alerting_rules,
    dashboard,
    dashboard_queries,
    exported_metric_names,
    metric_names,
    one,
    promtool,
    rendered,
)
from tests.static.test_manifests import KUBERNETES_VERSION

# What the dashboard's variables stand for, so that its queries can be parsed as PromQL.
GRAFANA_VARIABLES = {"namespace": ".+", "job": ".+", "__rate_interval": "1m"}


def test_service_monitor_scrapes_the_metrics_service_with_the_credentials_namespace_label(
    install_yaml: str,
) -> None:
    service = one(load_all(install_yaml), "Service")
    monitor = one(rendered(), "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    # Without it Prometheus renames the metrics' `namespace` (the credential's) to
    # `exported_namespace`, and every per-credential alert would name the operator's namespace.
    assert endpoint["honorLabels"] is True
    # The Prometheus Operator names the job after the Service; the absence alert selects it.
    assert service["metadata"]["name"] == METRICS_JOB
    absent = [r for r in alerting_rules(rendered()) if r["alert"] == "SimacanTokenOperatorAbsent"]
    assert f'job="{METRICS_JOB}"' in absent[0]["expr"]


def test_dashboard_ships_in_a_configmap_grafana_picks_up() -> None:
    configmap = one(rendered(), "ConfigMap")
    kubernetes_validate.validate(configmap, KUBERNETES_VERSION, strict=True)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {DASHBOARD_FILE.name: DASHBOARD_FILE.read_text()}
    board = dashboard()
    assert board["uid"] and board["title"]
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "namespace", "job"}


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_dashboard_queries_parse_and_name_only_exported_metrics(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule; a misspelt metric would show an empty panel."""
    queries = dashboard_queries(dashboard(), GRAFANA_VARIABLES)
    assert len(queries) >= 10
    used = set().union(*(metric_names(expr) for _, expr in queries))
    assert used <= exported_metric_names(), used - exported_metric_names()
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_file_is_formatted_json() -> None:
    """One JSON file, reviewable in diffs: 2-space indent as Grafana exports it, trailing newline."""
    text = DASHBOARD_FILE.read_text()
    assert text == json.dumps(json.loads(text), indent=2) + "\n"
