"""A real Prometheus (Debian's `prometheus` package) for a test: its own loopback port and data
directory, scraping and evaluating every second, and its HTTP API for what it concluded."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from localenv.polling import eventually
from localenv.processes import free_ports


@dataclass(frozen=True)
class Prometheus:
    url: str
    log_path: Path

    def _get(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=5)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def alerts(self, alertname: str) -> list[dict[str, Any]]:
        """Pending and firing alerts of one rule (resolved ones are not listed)."""
        return [a for a in self._get("/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == alertname]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._get("/api/v1/query", query=expr)["result"]
        return result

    def target_health(self) -> list[str]:
        return [t["health"] for t in self._get("/api/v1/targets")["activeTargets"]]

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_prometheus(
    directory: Path, rules_file: Path, job: str, targets: list[str], target_labels: dict[str, str]
) -> Iterator[Prometheus]:
    """Scrape `targets` as `job` and evaluate `rules_file`, both every second.

    honor_labels and `target_labels` copy what the ServiceMonitor does in a cluster: the metrics'
    own `namespace` label wins over the target's.
    """
    binary = shutil.which("prometheus")
    assert binary, "prometheus not found: run localenv/install-deps.sh (Debian's prometheus package)"
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_file)],
        "scrape_configs": [
            {
                "job_name": job,
                "honor_labels": True,
                "static_configs": [{"targets": targets, "labels": target_labels}],
            }
        ],
    }
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    (port,) = free_ports(1)
    log_path = directory / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}:\n{prometheus.logs()[-3000:]}")
        try:
            return httpx.get(f"{prometheus.url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        eventually(ready, timeout=30, what="prometheus /-/ready")
        yield prometheus
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
