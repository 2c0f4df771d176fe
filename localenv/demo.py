"""`scripts/demo`: the operator at work on this machine, in one command.

It installs what it needs (scripts/setup), starts a local control plane and a local fake Simacan
Auth API over HTTPS with 60 s tokens (or uses a real Auth API with --auth-url),
applies the CRD and examples/, runs the operator and shows every second what its status says.
Ctrl-C stops everything it started, by PID, and removes its temporary files.

`--for SECONDS` runs headless for that long after the operator started and exits 0 only if every
credential got a token and at least one was refreshed: CI runs it that way.

`--kubeconfig PATH` (or `--current-context`) uses a cluster the user already has (kind, minikube,
k3d, Docker Desktop) instead: no setup, no root, only Python 3.11 (a .venv is made if the packages
are missing). The operator and the stand-in still run here; the demo works in a namespace of its
own, `simacan-demo-<random>`, applies the CRD only if it is missing, and on exit (Ctrl-C, SIGTERM,
--for) deletes that namespace and the CRD if it installed it.

Only the standard library is imported at the top: the first phase runs on the system Python,
installs .venv, and then re-runs this module in .venv, where the rest is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from localenv.processes import exit_on_sigterm, free_ports, kube_env, operator_argv, spawn

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
SETUP = REPO / "scripts" / "setup"
EXAMPLES = REPO / "examples"
CRD_FILE = REPO / "crds" / "simacancredentials.auth.simacan.com.yaml"
NAMESPACE = "simacan-demo"
STARTED_ENV = "SIMACAN_DEMO_STARTED"
USERNAME_ENV, PASSWORD_ENV = "SIMACAN_USERNAME", "SIMACAN_PASSWORD"
HEARTBEAT_SECONDS = 20.0
COLD_BUILD_ESTIMATE = "about 8 minutes on 2 cores"
"""The cold install (etcd, the Go build of kube-apiserver and kube-controller-manager) measured
by scripts/setup on a 2-core machine: 473 s; later runs find the binaries cached."""
FIELD_MANAGER = "simacan-demo"
CLEANUP_SECONDS = 120.0
"""How long exit waits for the namespace (and a CRD it installed) to be gone from an existing cluster."""
VENV_PACKAGES = ("cryptography", "pyyaml")
"""What the demo needs beyond the package itself (the stand-in's TLS certificate, the examples)."""
NEEDED_MODULES = ("simacan_token_operator", "kopf", "kubernetes", "yaml", "cryptography", "jwt")
OPERATOR_STOP_SECONDS = 20.0
STARTUP_SECONDS = 60.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/demo",
        description="Run the operator against a local control plane and a local fake "
        "Simacan Auth API, with a live view. Ctrl-C stops everything.",
    )
    parser.add_argument(
        "--for",
        dest="seconds",
        type=float,
        metavar="SECONDS",
        help="run headless for this long after the operator started; exit 0 only if every "
        "credential got a token and at least one refresh happened",
    )
    parser.add_argument(
        "--auth-url",
        metavar="URL",
        help="use this real Simacan Auth API (https) instead of the local fake Auth API, e.g. "
        f"https://auth-service-stg.services.simacan.com/api/v1; username and password from "
        f"${USERNAME_ENV} and ${PASSWORD_ENV}, else asked for (the password is not echoed)",
    )
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="PATH",
        help="use the cluster of this kubeconfig (its current context) instead of a local control "
        "plane: no setup and no root; the demo works in a namespace of its own and removes it on exit",
    )
    cluster.add_argument(
        "--current-context",
        action="store_true",
        help="as --kubeconfig, with the current context of $KUBECONFIG or ~/.kube/config",
    )
    parser.add_argument(
        "--token-lifetime",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="lifetime of the fake Auth API's access tokens (default 60)",
    )
    options = parser.parse_args(argv)
    if options.auth_url and urlsplit(options.auth_url).scheme != "https":
        parser.error("--auth-url must be https://: the password never travels over plain http")
    if options.seconds is not None and options.seconds <= 0:
        parser.error("--for must be a positive number of seconds")
    if options.token_lifetime < 3:
        parser.error("--token-lifetime must be at least 3 seconds")
    if options.kubeconfig is not None and not options.kubeconfig.is_file():
        parser.error(f"--kubeconfig {options.kubeconfig}: no such file")
    return options


def existing_cluster(options: argparse.Namespace) -> bool:
    return options.kubeconfig is not None or bool(options.current_context)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    options = parse_args(args)
    login_env = take_login_env()
    if existing_cluster(options):
        os.environ.setdefault(STARTED_ENV, str(time.time()))  # "since scripts/demo started" counts the venv
        if not _importable(NEEDED_MODULES):
            python = venv_without_root()
            os.execve(python, [str(python), "-m", "localenv.demo", *args], {**os.environ, **login_env})
        return run(options, login_env)
    if Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve():
        os.environ.setdefault(STARTED_ENV, str(time.time()))
        code = install()
        if code != 0:
            print(f"scripts/setup failed with exit code {code}", file=sys.stderr)
            return code
        # The demo itself, re-executed in .venv (same process, not a child), takes them along.
        os.execve(VENV_PYTHON, [str(VENV_PYTHON), "-m", "localenv.demo", *args], {**os.environ, **login_env})
    return run(options, login_env)


def take_login_env() -> dict[str, str]:
    """$SIMACAN_USERNAME and $SIMACAN_PASSWORD, removed from this process's environment.

    The one place the demo reads them, before it starts anything: every child (scripts/setup, etcd,
    kube-apiserver, kube-controller-manager, the operator) inherits os.environ, and no longer finds
    them there. The username goes too: no child needs it, and it is half of the login.
    """
    return {name: value for name in (USERNAME_ENV, PASSWORD_ENV) if (value := os.environ.pop(name, ""))}


# --------------------------------------------------------------------------------------------- install


def install() -> int:
    """Run scripts/setup, passing its progress on, with a heartbeat while the cold build is quiet."""
    say("installing what the demo needs (scripts/setup; seconds when already installed)")
    started = time.monotonic()
    process = subprocess.Popen([str(SETUP)], stderr=subprocess.PIPE, text=True, cwd=REPO)
    building = threading.Event()
    assert process.stderr is not None
    relay = threading.Thread(target=_relay, args=(process.stderr, building), daemon=True)
    relay.start()
    while True:
        try:
            code = process.wait(timeout=HEARTBEAT_SECONDS)
            break
        except subprocess.TimeoutExpired:
            elapsed = _minutes(time.monotonic() - started)
            if building.is_set():
                say(f"  ... still building the control plane: {elapsed} so far ({COLD_BUILD_ESTIMATE})")
            else:
                say(f"  ... still installing: {elapsed} so far")
    relay.join(timeout=5)
    say(f"installed in {_minutes(time.monotonic() - started)}")
    return code


def _importable(modules: Sequence[str]) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in modules)


def venv_without_root() -> Path:
    """.venv with the package and what the demo needs: the only install an existing cluster needs."""
    if sys.version_info < (3, 11):  # noqa: UP036 - scripts/demo starts whatever python3 the user has
        raise SystemExit(f"demo: needs Python 3.11 or later, not {sys.version.split()[0]}")
    check = [str(VENV_PYTHON), "-c", "import " + ", ".join(NEEDED_MODULES)]
    if VENV_PYTHON.exists() and subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return VENV_PYTHON
    say(f"installing the operator and what the demo needs into {VENV_PYTHON.parent.parent} (no root)")
    started = time.monotonic()
    if not VENV_PYTHON.exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(VENV_PYTHON.parent.parent)], check=False)
        if made.returncode != 0:
            raise SystemExit("demo: python3 -m venv failed (on Debian or Ubuntu: apt install python3-venv)")
    # The lock's pins, without its hashes (an editable install cannot be hash-checked), as scripts/setup.
    lock = (REPO / "requirements.lock").read_text().splitlines()
    pins = [line.removesuffix(" \\").strip() for line in lock if line[:1].isalnum() and "==" in line]
    constraints = VENV_PYTHON.parent.parent / "constraints.txt"
    constraints.write_text("".join(pin + "\n" for pin in pins))
    pip = [str(VENV_PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    installed = subprocess.run([*pip, "-c", str(constraints), "-e", str(REPO), *VENV_PACKAGES], check=False)
    if installed.returncode != 0:
        raise SystemExit(f"demo: pip install into {VENV_PYTHON.parent.parent} failed")
    say(f"installed in {_minutes(time.monotonic() - started)}")
    return VENV_PYTHON


def _relay(stream: IO[str], building: threading.Event) -> None:
    for line in stream:
        if line.startswith("building "):
            building.set()
        sys.stderr.write(line)
        sys.stderr.flush()


def _minutes(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}m{whole % 60:02d}s" if whole >= 60 else f"{whole}s"


def say(text: str) -> None:
    print(f"demo: {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- run


@dataclass(frozen=True)
class Login:
    """Where the operator logs in and with what; the password never leaves this process but to the API."""

    auth_url: str
    username: str
    password: str
    allowed_host: str
    ca_file: Path | None


def run(options: argparse.Namespace, login_env: dict[str, str] | None = None) -> int:
    """Start everything, show the view, stop everything (in reverse order) however it ends."""
    started = float(os.environ.get(STARTED_ENV) or time.time())
    real = _real_login(options.auth_url, login_env or {}) if options.auth_url else None
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, exit_on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="simacan-demo-"))
    stack = contextlib.ExitStack()
    stack.callback(say, f"stopped everything it started and removed {work}")
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    try:
        return _run(options, started, real, work, stack)
    except KeyboardInterrupt:
        print()
        say(
            "Ctrl-C: stopping the operator, the fake Auth API and the control plane"
            if not existing_cluster(options)
            else "Ctrl-C: stopping the operator and the fake Auth API, removing what the demo applied"
        )
        return 130
    finally:
        # A second Ctrl-C or SIGTERM must not cut the cleanup short and leave processes (or, on a
        # cluster of the user's, the namespace) behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _run(
    options: argparse.Namespace, started: float, real: Login | None, work: Path, stack: contextlib.ExitStack
) -> int:
    # Imported here: these need .venv, which the first phase installed.
    from localenv.controlplane import running_control_plane
    from localenv.fakeauth import FakeAuthAPI

    kubeconfig: Path | None
    if existing_cluster(options):
        kubeconfig = options.kubeconfig.resolve() if options.kubeconfig else None
        api = stack.enter_context(contextlib.closing(_api_client(kubeconfig)))
        namespace = _borrow(api, kubeconfig, stack)
    else:
        say("starting the local control plane (etcd, kube-apiserver, kube-controller-manager)")
        plane = stack.enter_context(running_control_plane(work / "cluster"))
        pids = ", ".join(f"{name} {pid}" for name, pid in plane.pids.items())
        say(f"control plane ready in {plane.provision_seconds:.1f}s at {plane.server} (pids: {pids})")
        kubeconfig = plane.admin_kubeconfig
        api = stack.enter_context(contextlib.closing(_api_client(kubeconfig)))
        namespace = NAMESPACE
    fake = None
    if real is None:
        user, password = _example_login()
        fake = FakeAuthAPI({user: password}, access_lifetime=options.token_lifetime, tls=True)
        stack.enter_context(fake)
        login = Login(fake.base_url, user, password, f"127.0.0.1:{fake.port}", fake.ca_file)
        say(
            f"local fake Auth API at {fake.base_url} ({options.token_lifetime:g} s tokens; "
            f"its own CA: {fake.ca_file})"
        )
    else:
        login = real
    if real is not None:
        for line in password_notice(work, namespace, own_cluster=not existing_cluster(options)):
            say(line)
    _apply_all(api, login, namespace, own_cluster=not existing_cluster(options))
    operator = stack.enter_context(_operator(work, kubeconfig, login, namespace))
    say(f"operator started (pid {operator.process.pid}); log: {operator.log}")
    view = _View(options, kubeconfig, namespace, login, fake, operator, started)
    return view.loop(api)


def password_notice(work: Path, namespace: str = NAMESPACE, own_cluster: bool = True) -> list[str]:
    """What a real account's password goes through here, said before it is written."""
    if not own_cluster:
        return [
            f"your password goes into the Secret {namespace}/simacan-login in that cluster while the demo "
            "runs; the demo deletes the namespace on exit (Ctrl-C, --for, SIGTERM). If it is killed "
            f"with SIGKILL, delete it yourself: kubectl delete namespace {namespace}"
        ]
    return [
        f"your password goes into the Secret {NAMESPACE}/simacan-login, which the local control plane "
        f"keeps unencrypted in its etcd ({work / 'cluster' / 'etcd'}, served on a loopback port without "
        "client authentication: any process on this machine can read it) while the demo runs.",
        "when the demo ends (Ctrl-C, --for, SIGTERM) it stops the control plane and removes "
        f"{work} with it; if the demo is killed with SIGKILL, remove it yourself: rm -rf {work}",
    ]


def _real_login(auth_url: str, login_env: dict[str, str]) -> Login:
    """The user's own account: from the environment (taken at start), else asked for without echo."""
    username = login_env.get(USERNAME_ENV, "")
    password = login_env.get(PASSWORD_ENV, "")
    if not (username and password) and not sys.stdin.isatty():
        raise SystemExit(f"demo: set {USERNAME_ENV} and {PASSWORD_ENV} (no terminal to ask on)")
    username = username or input("Simacan username: ").strip()
    password = password or getpass.getpass("Simacan password (not echoed): ")
    parts = urlsplit(auth_url)
    host = (parts.hostname or "").lower()
    allowed = host if parts.port in (None, 443) else f"{host}:{parts.port}"
    return Login(auth_url.rstrip("/"), username, password, allowed, None)


def _example_login() -> tuple[str, str]:
    """The fake Auth API accepts exactly the account in examples/credentials-secret.yaml."""
    secret = _load_examples("credentials-secret.yaml")[0]
    data = secret["stringData"]
    return str(data["username"]), str(data["password"])


# --------------------------------------------------------------------------------------------- apply


def _api_client(kubeconfig: Path | None) -> Any:
    """For the kubeconfig given, or (None) the current context of $KUBECONFIG or ~/.kube/config."""
    if kubeconfig is None:
        from kubernetes import config

        return config.new_client_from_config()  # type: ignore[no-untyped-call]
    from localenv.controlplane import api_client_from_kubeconfig

    return api_client_from_kubeconfig(kubeconfig)


# --------------------------------------------------------------------------------------------- user's cluster

_CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
_OPERATOR_SELECTOR = "app.kubernetes.io/name=simacan-token-operator"


def _borrow(api: Any, kubeconfig: Path | None, stack: contextlib.ExitStack) -> str:
    """Work in a namespace of the demo's own, with the CRD only if missing; both removed on exit."""
    import yaml
    from urllib3.exceptions import HTTPError

    from simacan_token_operator.kube.client import RawApi

    raw = RawApi(api)
    where = f"kubeconfig {kubeconfig}" if kubeconfig else "the current context"
    say(f"using the cluster at {api.configuration.host} ({where}); no local control plane")
    try:
        _refuse_a_running_operator(raw)
    except (OSError, HTTPError) as error:
        raise SystemExit(f"demo: cannot reach {api.configuration.host}: {type(error).__name__}") from None
    crd = CRD_FILE.stem
    if _exists(raw, _CRD_PATH + crd):
        say(f"the CRD {crd} is already installed: the demo uses it and leaves it as it is")
    else:
        stack.callback(_remove, raw, _CRD_PATH + crd, f"the CRD {crd}")
        apply(api, yaml.safe_load(CRD_FILE.read_text()))
        say(f"installed the CRD {crd}; the demo removes it on exit")
    _wait("the CRD to be established", lambda: _established(raw))
    namespace = f"{NAMESPACE}-{secrets.token_hex(3)}"
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    raw.json("POST", "/api/v1/namespaces", body=body)
    stack.callback(_remove, raw, f"/api/v1/namespaces/{namespace}", f"namespace {namespace}")
    say(f"created namespace {namespace}; the demo deletes it, and everything in it, on exit")
    return namespace


def _refuse_a_running_operator(raw: Any) -> None:
    """An installed operator would serve the demo's namespace too, and the two would undo each other."""
    from kubernetes.client.exceptions import ApiException

    try:
        found = raw.json("GET", "/apis/apps/v1/deployments", query={"labelSelector": _OPERATOR_SELECTOR})
    except ApiException as error:
        say(f"could not look for an installed operator (HTTP {error.status}); assuming there is none")
        return
    running = [f"{d['metadata']['namespace']}/{d['metadata']['name']}" for d in found.get("items") or []]
    if running:
        raise SystemExit(
            f"demo: simacan-token-operator already runs in this cluster (Deployment {', '.join(running)}); "
            "it would serve the demo's namespace too. Use a cluster without it."
        )


def _exists(raw: Any, path: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        raw.json("GET", path)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def _remove(raw: Any, path: str, what: str) -> None:
    """Delete and wait until it is gone; a failure is said, not raised, so the rest is still cleaned up."""
    try:
        if _exists(raw, path):
            raw.json("DELETE", path)
        deadline = time.monotonic() + CLEANUP_SECONDS
        while _exists(raw, path):
            if time.monotonic() > deadline:
                say(f"{what} is still being deleted after {CLEANUP_SECONDS:g}s")
                return
            time.sleep(0.5)
    except Exception as error:
        status = getattr(error, "status", "")
        say(f"could not delete {what} ({type(error).__name__} {status}); delete it yourself")
        return
    say(f"deleted {what}")


def _load_examples(name: str) -> list[dict[str, Any]]:
    import yaml

    return [doc for doc in yaml.safe_load_all((EXAMPLES / name).read_text()) if doc]


_PATHS = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Secret": ("/api/v1", "secrets", True),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    "SimacanCredential": ("/apis/auth.simacan.com/v1alpha1", "simacancredentials", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
}


def apply(api: Any, obj: dict[str, Any], namespace: str | None = None) -> None:
    """Server-side apply, as `kubectl apply --server-side` does; no kubectl of any version needed."""
    from simacan_token_operator.kube.client import RawApi

    prefix, plural, namespaced = _PATHS[obj["kind"]]
    where = f"/namespaces/{namespace}" if namespaced and namespace else ""
    path = f"{prefix}{where}/{plural}/{obj['metadata']['name']}"
    RawApi(api).json(
        "PATCH",
        path,
        query={"fieldManager": FIELD_MANAGER, "force": "true"},
        body=obj,
        content_type="application/apply-patch+yaml",
    )


def _apply_all(api: Any, login: Login, namespace: str = NAMESPACE, own_cluster: bool = True) -> None:
    import yaml

    from simacan_token_operator.kube.client import RawApi

    raw = RawApi(api)
    if own_cluster:  # on a cluster of the user's, _borrow did this
        apply(api, yaml.safe_load(CRD_FILE.read_text()))
        _wait("the CRD to be established", lambda: _established(raw))
        apply(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    secret = _load_examples("credentials-secret.yaml")[0]
    secret["stringData"] = {"username": login.username, "password": login.password}
    apply(api, secret, namespace)
    credentials = _load_examples("simacancredentials.yaml")
    for credential in credentials:
        credential["spec"]["authURL"] = login.auth_url
        apply(api, credential, namespace)
    applied = "crds/ and examples/" if own_cluster else "examples/"
    say(
        f"applied {applied} in namespace {namespace}: Secret simacan-login, "
        + ", ".join(f"SimacanCredential {c['metadata']['name']}" for c in credentials)
    )
    if _has_ready_node(raw):
        for workload in _load_examples("workload.yaml"):
            apply(api, workload, namespace)
        say("applied examples/workload.yaml (it mounts the token Secret fleet-api)")
    else:
        say("examples/workload.yaml not applied: this control plane has no node to run it on")


def _established(raw: Any) -> bool:
    crd = raw.json("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/" + CRD_FILE.stem)
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _has_ready_node(raw: Any) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        nodes = raw.json("GET", "/api/v1/nodes").get("items") or []
    except ApiException:  # a user of a shared cluster may not list nodes
        return False
    for node in nodes:
        for condition in (node.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Ready" and condition.get("status") == "True":
                return True
    return False


def _wait(what: str, check: Any, timeout: float = STARTUP_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


# --------------------------------------------------------------------------------------------- operator


@dataclass(frozen=True)
class _Operator:
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int
    started: float  # time.time() when it was started: `--for` counts from here


@contextlib.contextmanager
def _operator(work: Path, kubeconfig: Path | None, login: Login, namespace: str) -> Iterator[_Operator]:
    """The operator as a process, as a user runs it; stopped by PID (SIGTERM, then SIGKILL)."""
    health_port, metrics_port = free_ports(2)
    argv = operator_argv(
        namespace=namespace,
        allowed_auth_host=login.allowed_host,
        auth_ca_file=login.ca_file,
        health_port=health_port,
        metrics_port=metrics_port,
    )
    env = kube_env(kubeconfig)  # no login: take_login_env removed it; None: the current context
    log = work / "operator.log"
    started = time.time()
    with log.open("wb") as sink:
        process = spawn(argv, sink, env)
    try:
        yield _Operator(process, log, metrics_port, started)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=OPERATOR_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _metric_calls(port: int) -> Any:
    """Auth API calls as the operator's own metrics count them (for a real Auth API, which we cannot ask)."""
    from localenv.demoview import AuthCalls

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    counts = {"password": 0, "refresh": 0, "failed": 0}
    for line in text.splitlines():
        if not line.startswith("simacan_auth_api_request_duration_seconds_count{"):
            continue
        labels, _, value = line.rpartition(" ")
        endpoint = "password" if 'endpoint="password"' in labels else "refresh"
        counts[endpoint] += int(float(value))
        if 'status="ok"' not in labels:
            counts["failed"] += int(float(value))
    return AuthCalls(counts["password"], counts["refresh"], counts["failed"])


# --------------------------------------------------------------------------------------------- view


class _View:
    """Every second: read the credentials and Events, draw them (or print them, headless)."""

    def __init__(
        self,
        options: argparse.Namespace,
        kubeconfig: Path | None,
        namespace: str,
        login: Login,
        fake: Any,
        operator: _Operator,
        started: float,
    ) -> None:
        self._seconds: float | None = options.seconds
        self._interactive = self._seconds is None and sys.stdout.isatty()
        self._fake = fake
        self._operator = operator
        self._started = started
        self._namespace = namespace
        self._header = [
            f"simacan-token-operator demo: namespace {namespace}; Auth API: "
            + (f"local fake Auth API {login.auth_url}" if fake else login.auth_url),
            f"operator pid {operator.process.pid}, log {operator.log}",
        ]
        self._footer = _suggestions(kubeconfig, fake is not None, namespace)

    def loop(self, api: Any) -> int:
        from localenv.demoview import Progress, render_plain, render_screen, verdict
        from simacan_token_operator.app.statusview import StatusError, fetch, printable

        progress = Progress()
        operator_started = self._operator.started
        deadline = None if self._seconds is None else operator_started + self._seconds
        if not self._interactive:
            print("\n".join([*self._header, *self._footer]), flush=True)
        snapshot = None
        shown_calls = None
        tick = time.monotonic()
        while deadline is None or time.time() < deadline:
            if self._operator.process.poll() is not None:
                print(f"the operator exited with {self._operator.process.returncode}; last lines of its log:")
                print("\n".join(self._operator.log.read_text(errors="replace").splitlines()[-30:]))
                return 1
            now = time.time()
            try:
                snapshot = fetch(api, self._namespace)
            except StatusError as error:
                print(printable(f"demo: {error}"), file=sys.stderr)
                tick = self._sleep(tick)
                continue
            had_token = progress.first_token_at is not None
            progress.observe(snapshot.credentials, now)
            calls = self._calls()
            if self._interactive:
                header = [*self._header, self._first_token(progress)]
                screen = render_screen(header, snapshot, calls, self._footer, now)
                width = shutil.get_terminal_size().columns
                # Cut long lines (Event messages) rather than let them wrap and scroll the view.
                fitted = [line if len(line) < width else line[: width - 2] + "…" for line in screen]
                sys.stdout.write("\x1b[H" + "".join(f"{line}\x1b[K\n" for line in fitted) + "\x1b[J")
            else:
                fresh = progress.new_events(snapshot.events)
                changed = calls if calls != shown_calls else None
                shown_calls = calls
                print("\n".join(render_plain(now - operator_started, snapshot, changed, fresh, now)))
                if not had_token and progress.first_token_at is not None:
                    print(self._first_token(progress))
            sys.stdout.flush()
            tick = self._sleep(tick)
        if snapshot is None:
            print("FAIL: the credentials could never be read")
            return 1
        ok, summary = verdict(progress, snapshot.credentials)
        print(self._first_token(progress))
        print(printable(("PASS: " if ok else "FAIL: ") + summary), flush=True)
        return 0 if ok else 1

    def _first_token(self, progress: Any) -> str:
        first = progress.first_token_at
        if first is None:
            return "time to first token: (no token yet)"
        return (
            f"time to first token: {first - self._started:.1f}s since scripts/demo started, "
            f"{first - self._operator.started:.1f}s since the operator started"
        )

    def _calls(self) -> Any:
        from localenv.demoview import AuthCalls

        if self._fake is None:
            return _metric_calls(self._operator.metrics_port)
        logins, refreshes = self._fake.count("password"), self._fake.count("refresh")
        ok = self._fake.count(status=200)
        return AuthCalls(logins, refreshes, logins + refreshes - ok)

    @staticmethod
    def _sleep(tick: float) -> float:
        """Keep a steady one-second beat, however long reading took."""
        tick += 1.0
        time.sleep(max(0.0, tick - time.monotonic()))
        return max(tick, time.monotonic() - 1.0)


def _suggestions(kubeconfig: Path | None, stand_in: bool, namespace: str = NAMESPACE) -> list[str]:
    ns = f"-n {namespace}"
    env = f"KUBECONFIG={kubeconfig} " if kubeconfig else ""
    lines = [
        "Look from another terminal:",
        f"  {env}kubectl get simacancredentials -A",
        f"  {env}{REPO / '.venv/bin/simacan-token-operator'} status {ns}",
        f"Things to try there{f' after export {env.strip()}' if env else ''} (this view shows what happens):",
        f"  force a refresh:   kubectl {ns} annotate simacancredential fleet-api "
        'auth.simacan.com/refresh-requested-at="$(date -u +%FT%TZ)" --overwrite',
        f"  break the password: kubectl {ns} patch secret simacan-login -p "
        """'{"stringData":{"password":"wrong"}}'""",
    ]
    if stand_in:
        _, password = _example_login()
        lines.append(
            f"  ...and mend it:     kubectl {ns} patch secret simacan-login -p "
            f"""'{json.dumps({"stringData": {"password": password}}, separators=(",", ":"))}'"""
        )
    lines += [
        f"  delete a token Secret: kubectl {ns} delete secret fleet-api",
        "Ctrl-C stops everything the demo started.",
    ]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
