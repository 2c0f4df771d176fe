"""A child process a benchmark measures: started with its log in a file, sampled from /proc, stopped
by pid on exit; and the waits around it, which fail early when it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from localenv.polling import Timeout, eventually
from localenv.processes import spawn

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]
STOP_TIMEOUT_SECONDS = 60.0
LOG_TAIL_LINES = 30
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchmarkError(RuntimeError):
    """The benchmark could not measure what it set out to measure."""


# --- /proc -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One look at a process: what it holds now, the most it ever held, and CPU it has used so far."""

    rss_kib: int
    hwm_kib: int
    cpu_seconds: float


def sample(pid: int) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    # /proc/PID/stat: fields after the parenthesised command; utime and stime are the 12th and 13th.
    stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    cpu = (int(stat[11]) + int(stat[12])) / CLOCK_TICKS
    return Sample(_kib(fields["VmRSS"]), _kib(fields["VmHWM"]), cpu)


def _kib(value: str) -> int:
    number, _, unit = value.strip().partition(" ")
    assert unit == "kB", f"unexpected unit in /proc status: {value!r}"
    return int(number)


# --- child processes -------------------------------------------------------------------------------


class Child:
    """A Python child process with its output in a log file; stopped by pid on exit, even on error."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name, self.log = name, log
        self.started_at = time.monotonic()
        with log.open("ab") as sink:
            sink.write(f"===== {' '.join(argv)}\n".encode())
            sink.flush()
            self.process = spawn(argv, sink, env, cwd=REPO_ROOT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise BenchmarkError(f"{self.name} exited with {code}; {self.log}:\n{self.log_tail()}")

    def sample(self) -> Sample:
        self.check_alive()
        return sample(self.pid)

    def stop(self) -> tuple[int, float]:
        """SIGTERM, as kubelet does; returns the exit code and how long stopping took."""
        began = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        return self.process.returncode, time.monotonic() - began

    def log_tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, child: Child, interval: float) -> T:
    """Poll `probe` until it returns something truthy; fail early if the child dies."""

    def alive_and(probe_result: Callable[[], T | None]) -> T | None:
        child.check_alive()
        return probe_result()

    try:
        return eventually(lambda: alive_and(probe), timeout=timeout, interval=interval, what=what)
    except Timeout as error:
        raise BenchmarkError(f"{error}; {child.log}:\n{child.log_tail()}") from None


def settle(child: Child, seconds: float, every: float = 0.0) -> list[Sample]:
    """The one deliberate fixed wait: let the child go idle before sampling, watching that it lives.

    With `every`, also sample the child that often, to show whether its memory levels off or keeps growing.
    """
    began = time.monotonic()
    deadline = began + seconds
    samples: list[Sample] = []
    next_sample = began + every if every > 0 else float("inf")
    while (left := deadline - time.monotonic()) > 0:
        child.check_alive()
        if time.monotonic() >= next_sample:
            samples.append(child.sample())
            next_sample += every
        time.sleep(min(left, 0.5, max(next_sample - time.monotonic(), 0.0)))
    child.check_alive()
    return samples
