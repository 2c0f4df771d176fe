"""What every local process of the harness shares: free ports, a SIGTERM that unwinds, the
operator's command line and its environment.

Defined once so that the tests, the demo and the benchmarks start the operator the same way, the
way a user runs it. Standard library only: the demo's first phase imports it on the system Python,
before .venv exists.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, NoReturn

OPERATOR_MODULE = "simacan_token_operator"
LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
# Loaded at import, never in a forked child: a dlopen between fork and exec could deadlock on a lock
# that another thread of the parent (the fake Auth API's, say) held at the fork. None off Linux.
_LIBC: ctypes.CDLL | None = None
with contextlib.suppress(OSError):
    _LIBC = ctypes.CDLL(None, use_errno=True)


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports, asked of the kernel (held open together, so that they differ)."""
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)
        ]
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def exit_on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    """A SIGTERM handler that raises SystemExit, so context managers unwind and stop every child
    (the default action would end the process without running any cleanup)."""
    raise SystemExit(128 + signum)


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this child when the parent dies without cleaning up: a `preexec_fn`.

    Only from the main thread: PR_SET_PDEATHSIG fires when the *thread* that forked exits."""
    with contextlib.suppress(AttributeError):  # no prctl: not Linux
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    argv: Sequence[str], sink: IO[bytes], env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` with its output in `sink`, in its own session (a terminal's Ctrl-C reaches only
    us, and we stop the children in order), and killed with us if we die without stopping it."""
    preexec = die_with_parent if threading.current_thread() is threading.main_thread() else None
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=sink,
        stderr=subprocess.STDOUT,
        preexec_fn=preexec,  # only the child runs it, before exec
        start_new_session=True,
    )


def serve_until_stopped(kubeconfig: Path, ready: str) -> None:
    """For the `up` commands that serve in the foreground: the kubeconfig on stdout (for scripts), what
    is ready on stderr (for people), then block until SIGTERM or Ctrl-C."""
    print(kubeconfig, flush=True)
    print(f"{ready}; Ctrl-C to stop", file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    while not stop.wait(1.0):
        pass


def operator_argv(
    *,
    health_port: int,
    metrics_port: int,
    namespace: str = "",
    allowed_auth_host: str | None = None,
    auth_ca_file: Path | None = None,
    python: str = sys.executable,
    extra: Sequence[str] = (),
) -> list[str]:
    """`python -m simacan_token_operator run ...` as a user runs it, serving health and metrics on
    loopback only; `namespace` "" watches all namespaces."""
    return [
        python,
        "-m",
        OPERATOR_MODULE,
        "run",
        *(["--namespace", namespace] if namespace else []),
        *(["--allowed-auth-host", allowed_auth_host] if allowed_auth_host else []),
        *(["--auth-ca-file", str(auth_ca_file)] if auth_ca_file else []),
        "--bind-address",
        LOOPBACK,
        "--health-port",
        str(health_port),
        "--metrics-port",
        str(metrics_port),
        *extra,
    ]


def kube_env(kubeconfig: Path | None, **extra: str) -> dict[str, str]:
    """This process's environment for a child that talks to the cluster of `kubeconfig` (None: the
    current context, as this process reads it); never one that lets the child believe it runs in a pod."""
    env = {**os.environ, **({"KUBECONFIG": str(kubeconfig)} if kubeconfig is not None else {}), **extra}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return env
