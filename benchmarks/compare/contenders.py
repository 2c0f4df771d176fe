"""The contenders: what each needs in the cluster, and how each is started as a local process.

- ours: SimacanCredentials, and `python -m simacan_token_operator run`.
- eso: External Secrets Operator v0.16.2 as its documentation shows it: a `Webhook` generator per
  account posting the form login, an `ExternalSecret` per token Secret with `refreshInterval` set to
  the token lifetime (the obvious choice) or to two thirds of it, and a template that keeps only
  `access_token` (without it the refresh token lands in the Secret too). Built by build_eso.sh.
- cron: cron.py, the fixed-interval loop with a login per Secret (a CronJob per credential).
- loop: cron.py --mode loop, the plain loop: one login per account per run, a PUT per Secret.

Every contender writes token Secrets token-00000, token-00001, ... holding the JWT under key `token`,
so the reader judges them all the same way.
"""

from __future__ import annotations

import base64
import concurrent.futures
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.child import BenchmarkError, Child
from benchmarks.compare.kube import KubeClient
from localenv.apiserver_requests import wait_until_collected
from localenv.controlplane import ControlPlane
from localenv.fakeauth import FakeAuthAPI
from localenv.processes import free_ports, kube_env, operator_argv

COMPARE_DIR = Path(__file__).resolve().parent
REPO_ROOT = COMPARE_DIR.parents[1]
OUR_CRD = REPO_ROOT / "crds" / "simacancredentials.auth.simacan.com.yaml"
ESO_BUILD_SCRIPT = COMPARE_DIR / "build_eso.sh"
ESO_NOT_CACHED = 3  # build_eso.sh --cached: the exit status when there is no build yet
CRON_MODULE = "benchmarks.compare.cron"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
ESO_GENERATOR_API = "generators.external-secrets.io/v1alpha1"
# The Webhook generator's body template: the form login, from the login Secret named "login" below.
LOGIN_FORM = "username={{ .login.username | urlquery }}&password={{ .login.password | urlquery }}"


@dataclass(frozen=True)
class Load:
    """N token Secrets whose credentials point round-robin at `logins` accounts; `lifetime`, when
    given, is this load's token lifetime (else the run's --lifetime)."""

    credentials: int
    logins: int
    lifetime: float | None = None

    @property
    def key(self) -> str:
        accounts = "shared" if self.logins == 1 else f"{self.logins}-accounts"
        lifetime = "" if self.lifetime is None else f"-L{self.lifetime:g}"
        return f"n{self.credentials}-{accounts}{lifetime}"

    @property
    def label(self) -> str:
        if self.credentials == 1:
            return "1 credential"
        if self.logins == 1:
            return f"{self.credentials} sharing one account"
        if self.logins == self.credentials:
            return f"{self.credentials}, each its own account"
        return f"{self.credentials} over {self.logins} accounts"


def secret_names(load: Load) -> list[str]:
    return [f"token-{index:05d}" for index in range(load.credentials)]


@dataclass(frozen=True)
class Arena:
    """What every contender is handed: the cluster, the Auth API, the load and where to log."""

    plane: ControlPlane
    kube: KubeClient
    namespace: str
    auth: FakeAuthAPI
    lifetime: float
    load: Load
    log_dir: Path


class Contender(ABC):
    name: str

    @abstractmethod
    def install(self, arena: Arena) -> None:
        """CRDs and the objects that describe the load (created before the process starts)."""

    @abstractmethod
    def start(self, arena: Arena) -> Child:
        """Start the process; the clock for 'time until all Secrets exist' starts here."""

    def notes(self, arena: Arena) -> str:
        return ""

    @property
    def log_name(self) -> str:
        """A file name for the contender's log and work dir ("eso-2/3" has a slash)."""
        return self.name.replace("/", "_")


def apply_crds(kube: KubeClient, documents: Sequence[Mapping[str, Any]], timeout: float = 60.0) -> None:
    """Server-side apply (the ESO bundle is too large for client-side apply's annotation), then wait."""
    names = []
    for document in documents:
        kube.apply(f"{CRD_PATH}/{document['metadata']['name']}", document)
        names.append(document["metadata"]["name"])
    for name in names:
        wait_established(kube, name, timeout)


def wait_established(kube: KubeClient, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        conditions = (kube.get(f"{CRD_PATH}/{name}").get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            return
        if time.monotonic() > deadline:
            raise BenchmarkError(f"CRD {name} not Established after {timeout:.0f}s")
        time.sleep(0.1)


def create_all(kube: KubeClient, path: str, bodies: Sequence[Mapping[str, Any]]) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda body: kube.create(path, body), bodies))  # list() re-raises a failure


def create_objects(
    arena: Arena, api_version: str, kind: str, plural: str, specs: Mapping[str, Mapping[str, Any]]
) -> None:
    """One `kind` per name in the arena's namespace, with its spec, in the order given."""
    bodies = [
        {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, "spec": spec}
        for name, spec in specs.items()
    ]
    create_all(arena.kube, f"/apis/{api_version}/namespaces/{arena.namespace}/{plural}", bodies)


# --- ours ------------------------------------------------------------------------------------------


class Ours(Contender):
    name = "ours"

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python
        """The interpreter: a venv with only the runtime dependencies measures what the image ships."""

    def install(self, arena: Arena) -> None:
        apply_crds(arena.kube, [yaml.safe_load(OUR_CRD.read_text())])
        specs = {
            name: {
                "credentialsSecretRef": {"name": f"login-{index % arena.load.logins}"},
                "authURL": arena.auth.base_url,
            }
            for index, name in enumerate(secret_names(arena.load))
        }
        create_objects(arena, "auth.simacan.com/v1alpha1", "SimacanCredential", "simacancredentials", specs)
        wait_until_collected(arena.plane, "simacancredentials")

    def start(self, arena: Arena) -> Child:
        health_port, metrics_port = free_ports(2)
        argv = operator_argv(
            namespace=arena.namespace,
            allowed_auth_host=f"127.0.0.1:{arena.auth.port}",
            auth_ca_file=arena.auth.ca_file,
            health_port=health_port,
            metrics_port=metrics_port,
            python=self.python,
        )
        env = kube_env(arena.plane.admin_kubeconfig)
        return Child(self.name, argv, env, arena.log_dir / f"{self.log_name}.log")


# --- External Secrets Operator ---------------------------------------------------------------------


def cached_eso(build: bool) -> Path | None:
    """The ESO build dir (binary and CRD bundle) if it is cached; with `build`, builds it first when it
    is not (a Go build of several minutes, so only when asked)."""
    done = subprocess.run(  # noqa: S603 - our own script
        ["/bin/bash", str(ESO_BUILD_SCRIPT), *([] if build else ["--cached"])],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode == ESO_NOT_CACHED and not build:
        return None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-30:])
        raise BenchmarkError(f"{ESO_BUILD_SCRIPT} failed with exit code {done.returncode}:\n{tail}")
    return Path(done.stdout.strip().splitlines()[-1])


class ExternalSecrets(Contender):
    """ESO with a Webhook generator; `refresh_fraction` of the token lifetime as refreshInterval."""

    def __init__(self, build_dir: Path, refresh_fraction: float, name: str) -> None:
        self.build_dir = build_dir
        self.refresh_fraction = refresh_fraction
        self.name = name

    def install(self, arena: Arena) -> None:
        bundle = [doc for doc in yaml.safe_load_all((self.build_dir / "bundle.yaml").read_text()) if doc]
        apply_crds(arena.kube, bundle, timeout=120.0)
        ca_bundle = base64.b64encode(arena.auth.ca_file.read_bytes()).decode()
        generators = {
            f"login-{index}": {
                "url": f"{arena.auth.base_url}/auth/password",
                "method": "POST",
                "headers": {"Content-Type": "application/x-www-form-urlencoded"},
                "body": LOGIN_FORM,
                "result": {"jsonPath": "$"},
                "caBundle": ca_bundle,
                "timeout": "30s",
                "secrets": [{"name": "login", "secretRef": {"name": f"login-{index}"}}],
            }
            for index in range(arena.load.logins)
        }
        create_objects(arena, ESO_GENERATOR_API, "Webhook", "webhooks", generators)
        interval = f"{arena.lifetime * self.refresh_fraction:.0f}s"
        external_secrets = {
            name: {
                "refreshInterval": interval,
                "target": {
                    "name": name,
                    "template": {"engineVersion": "v2", "data": {"token": "{{ .access_token }}"}},
                },
                "dataFrom": [
                    {
                        "sourceRef": {
                            "generatorRef": {
                                "apiVersion": ESO_GENERATOR_API,
                                "kind": "Webhook",
                                "name": f"login-{index % arena.load.logins}",
                            }
                        }
                    }
                ],
            }
            for index, name in enumerate(secret_names(arena.load))
        }
        create_objects(arena, "external-secrets.io/v1", "ExternalSecret", "externalsecrets", external_secrets)
        wait_until_collected(arena.plane, "externalsecrets")

    def start(self, arena: Arena) -> Child:
        argv = [
            str(self.build_dir / "external-secrets"),
            f"--namespace={arena.namespace}",
            f"--metrics-addr=127.0.0.1:{free_ports(1)[0]}",
            "--enable-leader-election=false",
        ]
        env = kube_env(arena.plane.admin_kubeconfig)
        return Child(self.name, argv, env, arena.log_dir / f"{self.log_name}.log")

    def notes(self, arena: Arena) -> str:
        return f"refreshInterval {arena.lifetime * self.refresh_fraction:.0f}s, --concurrent 1 (default)"


# --- the cron loop ---------------------------------------------------------------------------------


class CronLoop(Contender):
    """cron.py in `mode` (cron or loop; also the contender's name) every `interval_fraction` of the
    token lifetime."""

    def __init__(self, mode: str, interval_fraction: float) -> None:
        self.name = mode
        self.interval_fraction = interval_fraction

    def install(self, arena: Arena) -> None:
        return None  # it needs only the login Secrets, which every contender gets

    def start(self, arena: Arena) -> Child:
        argv = [
            sys.executable,
            "-m",
            CRON_MODULE,
            "--mode",
            self.name,
            "--server",
            arena.plane.server,
            "--ca-file",
            str(arena.plane.ca_file),
            "--namespace",
            arena.namespace,
            "--credentials",
            str(arena.load.credentials),
            "--logins",
            str(arena.load.logins),
            "--auth-url",
            arena.auth.base_url,
            "--auth-ca-file",
            str(arena.auth.ca_file),
            "--interval",
            f"{arena.lifetime * self.interval_fraction:g}",
        ]
        env = kube_env(arena.plane.admin_kubeconfig, KUBE_TOKEN=arena.plane.admin_token)
        return Child(self.name, argv, env, arena.log_dir / f"{self.log_name}.log")

    def notes(self, arena: Arena) -> str:
        logins = "a login per Secret" if self.name == "cron" else "a login per account"
        return f"every {arena.lifetime * self.interval_fraction:g}s, {logins}, 8 writes at a time"
