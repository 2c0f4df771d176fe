"""The scripts people write instead of an operator, as one long-running process for the benchmark.

On a fixed schedule (every `--interval` seconds, first run at once), a run refreshes every token
Secret, up to `--parallel` Secrets at a time; a run that is still busy when the next one falls due
makes that one skip. Two shapes (`--mode`):

- `cron`: what one CronJob per credential (`concurrencyPolicy: Forbid`) doing a `curl` to
  /auth/password plus `kubectl apply` does: a password login with that credential's own login
  Secret, then a server-side apply of its token Secret. One login per Secret per run.
- `loop`: the plain loop of issue 22: one password login per account per run (one in all when
  every Secret shares an account), then a PUT of every Secret (a POST for one that does not exist
  yet). The fewest requests a writer that keeps no state can make.

Neither reads the token's expiry nor uses the refresh token: that is the point of the comparison.
The API server token comes from the environment (KUBE_TOKEN), never from the command line.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import httpx

from benchmarks.child import BenchmarkError
from benchmarks.compare.kube import KubeClient, KubeTarget

TOKEN_ENV = "KUBE_TOKEN"  # noqa: S105 - the variable's name, not a secret
MODES = ("cron", "loop")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare.cron", description=__doc__)
    parser.add_argument("--mode", choices=MODES, default="cron", help="cron (default) or loop; see above")
    parser.add_argument("--server", required=True)
    parser.add_argument("--ca-file", type=Path, required=True, help="CA of the API server")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--credentials", type=int, required=True, help="token Secrets token-00000, ...")
    parser.add_argument("--logins", type=int, required=True, help="login Secrets login-0, ... (round-robin)")
    parser.add_argument("--auth-url", required=True, help="Auth API base URL (…/api/v1)")
    parser.add_argument("--auth-ca-file", type=Path, required=True)
    parser.add_argument("--interval", type=float, required=True, help="seconds between scheduled runs")
    parser.add_argument("--parallel", type=int, default=8, help="jobs running at once (default 8)")
    return parser.parse_args(argv)


def secret_name(index: int) -> str:
    return f"token-{index:05d}"


class Loop:
    """One scheduled run refreshes every Secret; runs start on a fixed grid, skipping any still busy."""

    def __init__(self, options: argparse.Namespace, kube: KubeClient, auth: httpx.Client) -> None:
        self._options = options
        self._kube = kube
        self._auth = auth
        self._secrets_path = f"/api/v1/namespaces/{options.namespace}/secrets"
        self.failures = 0

    def run_once(self) -> None:
        accounts = self._accounts()
        # loop: one login per account, shared by its Secrets; cron: a login per Secret in its job.
        tokens = [self._login(account, "run") for account in accounts] if self._options.mode == "loop" else []

        def job(index: int) -> bool:
            account = index % len(accounts)
            if tokens:
                return self._write(index, tokens[account], replace=True)
            return self._write(index, self._login(accounts[account], f"job {index}"), replace=False)

        with concurrent.futures.ThreadPoolExecutor(self._options.parallel) as pool:
            for done in pool.map(job, range(self._options.credentials)):
                self.failures += 0 if done else 1

    def _accounts(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for index in range(self._options.logins):
            data = self._kube.get(f"{self._secrets_path}/login-{index}").get("data") or {}
            found.append(
                (base64.b64decode(data["username"]).decode(), base64.b64decode(data["password"]).decode())
            )
        return found

    def _login(self, account: tuple[str, str], who: str) -> str | None:
        """The access token, or None (reported on stderr, without the password)."""
        username, password = account
        try:
            response = self._auth.post("/auth/password", data={"username": username, "password": password})
            if response.status_code != 200:
                print(f"{who}: login answered HTTP {response.status_code}", file=sys.stderr, flush=True)
                return None
            token: str = response.json()["access_token"]
            return token
        except (httpx.HTTPError, KeyError, ValueError) as error:
            print(f"{who}: login failed: {type(error).__name__}", file=sys.stderr, flush=True)
            return None

    def _write(self, index: int, token: str | None, replace: bool) -> bool:
        if token is None:
            return False
        name = secret_name(index)
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/managed-by": f"{self._options.mode}-loop"},
            },
            "type": "Opaque",
            "data": {"token": _b64(token), "token_type": _b64("Bearer")},
        }
        try:
            if not replace:
                self._kube.apply(f"{self._secrets_path}/{name}", body)
            elif not self._kube.replace(f"{self._secrets_path}/{name}", body):
                self._kube.create(self._secrets_path, body)
            return True
        except (httpx.HTTPError, BenchmarkError) as error:
            print(f"job {index}: {type(error).__name__}", file=sys.stderr, flush=True)
            return False


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    target = KubeTarget(options.server, options.ca_file, os.environ[TOKEN_ENV])
    with (
        target.client() as kube,
        httpx.Client(base_url=options.auth_url, verify=str(options.auth_ca_file), timeout=30.0) as auth,
    ):
        loop = Loop(options, kube, auth)
        began = time.monotonic()
        runs = skipped = slot = 0
        while not stopping.is_set():
            loop.run_once()
            runs += 1
            elapsed = time.monotonic() - began
            next_slot = int(elapsed // options.interval) + 1
            skipped += next_slot - slot - 1  # slots that fell due while this run was busy
            slot = next_slot
            stopping.wait(next_slot * options.interval - elapsed)
        print(f"{options.mode}: {runs} runs, {loop.failures} failed jobs, {skipped} runs skipped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
