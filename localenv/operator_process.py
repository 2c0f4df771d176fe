"""Run the operator as a real process, the way a user runs it, and read what it exposes."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from localenv.polling import eventually
from localenv.processes import free_ports, kube_env, operator_argv


@dataclass
class OperatorProcess:
    kubeconfig: Path
    namespace: str
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    health_port: int = 0
    metrics_port: int = 0
    runs: int = 0

    def start(self) -> OperatorProcess:
        assert self.process is None, "already running"
        self.health_port, self.metrics_port = free_ports(2)
        self.runs += 1
        args = operator_argv(
            namespace=self.namespace,  # "": all namespaces
            health_port=self.health_port,
            metrics_port=self.metrics_port,
            extra=["--log-level", "debug", *self.extra_args],
        )
        env = kube_env(self.kubeconfig)
        log = self.log_path.open("ab")
        log.write(f"\n===== operator run {self.runs}: {' '.join(args[1:])}\n".encode())
        log.flush()
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        eventually(self._ready, timeout=30, what="operator /readyz")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"operator exited with {self.process.returncode}:\n{self.logs()[-3000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.health_port}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> int:
        """SIGTERM and wait, as kubelet does; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL: a crashed pod or a lost node, with no chance to clean up."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def restart(self) -> OperatorProcess:
        self.stop()
        return self.start()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def healthz(self) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.health_port}/healthz", timeout=5)

    def metric(self, metric_name: str, **labels: str) -> float | None:
        """The value of one sample, or None when the series does not exist."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            metric, _, rest = series.partition("{")
            if metric != metric_name:
                continue
            got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
            if got == wanted:
                return float(value)
        return None
