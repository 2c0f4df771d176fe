"""What the fault tests and the fault report observe, from outside the operator.

The operator's own account is never trusted for these figures: Secret writes and token
validity come from a watch on the API server, Auth API calls from the fake Auth API, Events
from the API server, leadership from each replica's `simacan_leader` metric polled by the test.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from kubernetes import client, config

from localenv.controlplane import ControlPlane
from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import Namespace, api_client
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually
from simacan_token_operator.kube.client import RawApi

REPO = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "simacan-token-operator"
OPERATOR_ACCOUNT = "simacan-token-operator"
USERNAME = "api-user@example.com"
PASSWORD = "correct-horse-battery-staple-7f3a"


def install(plane: ControlPlane) -> Path:
    """`kubectl apply -k manifests/`, then a kubeconfig acting as the operator's ServiceAccount."""
    subprocess.run(
        ["kubectl", "--kubeconfig", str(plane.admin_kubeconfig), "apply", "-k", str(REPO / "manifests")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    api = api_client(plane.admin_kubeconfig)
    extensions = client.ApiextensionsV1Api(api)

    def established() -> bool:
        crd = extensions.read_custom_resource_definition("simacancredentials.auth.simacan.com")
        conditions = (crd.status.conditions if crd.status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    eventually(established, timeout=30, what="CRD Established")
    core = client.CoreV1Api(api)
    eventually(
        lambda: core.read_namespaced_service_account(OPERATOR_ACCOUNT, OPERATOR_NAMESPACE),
        timeout=30,
        what="operator ServiceAccount",
    )
    return plane.kubeconfig_for_service_account(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)


def kubeconfig_via(kubeconfig: Path, port: int, path: Path) -> Path:
    """The same identity, but reaching the API server through 127.0.0.1:`port` (a proxy).
    The serving certificate names 127.0.0.1, so TLS verification still holds."""
    config = json.loads(kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def operator_args(fake_auth: FakeAuthAPI) -> list[str]:
    return ["--allowed-auth-host", f"127.0.0.1:{fake_auth.port}", "--auth-ca-file", str(fake_auth.ca_file)]


def credential_spec(fake_auth: FakeAuthAPI, secret: str = "login", **extra: Any) -> dict[str, Any]:
    return {"credentialsSecretRef": {"name": secret}, "authURL": fake_auth.base_url, **extra}


def token_claims(secret: dict[str, Any] | None) -> dict[str, Any] | None:
    """The claims of the token a Secret holds (unverified: the tests only need its times)."""
    raw = (secret.get("data") or {}).get("token") if secret else None
    if not raw:
        return None
    claims: dict[str, Any] = jwt.decode(base64.b64decode(raw).decode(), options={"verify_signature": False})
    return claims


def token_expiry(secret: dict[str, Any] | None) -> float | None:
    """The `exp` of the token a Secret holds."""
    claims = token_claims(secret)
    return None if claims is None else float(claims["exp"])


# --- Secrets as the API server saw them ------------------------------------------------------------


@dataclass(frozen=True)
class SecretState:
    at: float  # time.time() when the watch (or a list after a gap) delivered it
    name: str
    resource_version: str
    expires: float | None  # None: no Secret, or no token in it
    kind: str = "LISTED"  # the watch event (ADDED, MODIFIED, DELETED) or LISTED after a gap


@dataclass(frozen=True)
class Mark:
    """One end of a counting window, taken by a consistent LIST of the namespace's Secrets.

    A watch delivers a write some time after the API server committed it (tens of ms, more while
    the watch cache catches up after an etcd restart), so "delivered before time T" is not
    "written before T". Compared by resourceVersion (comparable for one resource since
    Kubernetes 1.35, KEP-5504), a write is inside a window exactly when the first list did not
    contain it and the second did, however late the watch delivered it."""

    at: float  # time.time() when the list was answered
    version: int  # the list's resourceVersion
    secrets: dict[str, int]  # each listed Secret's resourceVersion


@dataclass
class SecretRecorder:
    """Watches a namespace's Secrets through every outage, resuming from the last resourceVersion,
    so each write is counted once, and the token each state held is known."""

    api: client.ApiClient
    namespace: str
    states: list[SecretState] = field(default_factory=list)
    relists: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _listed: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> SecretRecorder:
        """Start watching; returns once the Secrets as they are now have been listed, so that
        nothing recorded afterwards can be mistaken for a write."""
        self._thread = threading.Thread(target=self._run, daemon=True, name="secret-recorder")
        self._thread.start()
        if not self._listed.wait(30):
            raise TimeoutError("could not list the Secrets to record")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(40)

    def __enter__(self) -> SecretRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        core = client.CoreV1Api(self.api)
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listed = core.list_namespaced_secret(self.namespace, _request_timeout=(3, 10))
                    version = listed.metadata.resource_version if listed.metadata else None
                    self.relists += 1
                    present: set[str] = set()
                    for secret in listed.items:
                        body = self.api.sanitize_for_serialization(secret)  # type: ignore[no-untyped-call]
                        self._record(body, "LISTED")
                        present.add(body["metadata"]["name"])
                    self._gone_meanwhile(present, str(version))
                    self._listed.set()
                response = (
                    RawApi(self.api)
                    .request(
                        "GET",
                        f"/api/v1/namespaces/{self.namespace}/secrets",
                        query={"watch": "true", "resourceVersion": version, "timeoutSeconds": 20},
                        timeout=(3, 25),
                    )
                    .response
                )
                for line in response:
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        version = None  # 410 Gone: list again
                        break
                    version = obj["metadata"]["resourceVersion"]
                    self._record(obj, event["type"])
                    if self._stop.is_set():
                        break
            except Exception:  # down or restarting, or 410 Gone as an HTTP status: list again
                version = None  # a relist records each changed Secret once (deduplicated by resourceVersion)
                self._stop.wait(0.2)

    def _record(self, secret: dict[str, Any], kind: str) -> None:
        meta = secret["metadata"]
        expires = None if kind == "DELETED" else token_expiry(secret)
        with self._lock:
            state = SecretState(time.time(), meta["name"], meta["resourceVersion"], expires, kind)
            previous = self.latest(meta["name"])
            if previous is None or previous.resource_version != state.resource_version:
                self.states.append(state)

    def _gone_meanwhile(self, present: set[str], version: str) -> None:
        """A list after a gap does not show what was deleted during the gap: record those
        deletions (at the list's resourceVersion, the latest they can have happened)."""
        with self._lock:
            names = {s.name for s in self.states}
            gone = [n for n in names if n not in present and (s := self.latest(n)) and s.kind != "DELETED"]
            self.states.extend(SecretState(time.time(), n, version, None, "DELETED") for n in gone)

    def latest(self, name: str) -> SecretState | None:
        return next((s for s in reversed(self.states) if s.name == name), None)

    def mark(self) -> Mark:
        """The Secrets as the API server holds them now (a consistent, quorum list): one end of
        a window for `writes`. Needs the API server to answer."""
        listed = RawApi(self.api).json("GET", f"/api/v1/namespaces/{self.namespace}/secrets", timeout=(3, 10))
        secrets = {s["metadata"]["name"]: int(s["metadata"]["resourceVersion"]) for s in listed["items"]}
        return Mark(time.time(), int(listed["metadata"]["resourceVersion"]), secrets)

    def caught_up(self, names: Sequence[str], mark: Mark) -> bool:
        """Whether the watch has delivered every write of `names` up to `mark`: each listed one
        at its listed version (or later), each unlisted one deleted or never seen."""
        with self._lock:
            for name in names:
                own = [s for s in self.states if s.name == name]
                if name in mark.secrets:
                    if not any(int(s.resource_version) >= mark.secrets[name] for s in own):
                        return False
                elif own and own[-1].kind != "DELETED":
                    return False
        return True

    def writes(
        self, names: Sequence[str], since: float | Mark, until: float | Mark | None = None
    ) -> list[SecretState]:
        """The writes of `names` from `since` to `until` (None: up to now), by delivery time for
        a float, by resourceVersion for a Mark (exact: waits until the watch delivered every
        write up to that mark). A LISTED state stands for one or more writes during a gap."""
        if isinstance(until, Mark):
            end = until
            eventually(
                lambda: self.caught_up(names, end),
                timeout=30,
                what=f"the Secret watch to reach resourceVersion {end.version}",
            )
        with self._lock:
            return [s for s in self.states if s.name in names and _after(s, since) and _before(s, until)]

    def longest_invalid(self, names: Sequence[str], since: float, until: float) -> float:
        """The longest time within [since, until] that any of `names` held no unexpired token
        (by delivery time: a new token delivered late can only make it look longer)."""
        worst = 0.0
        with self._lock:
            states = list(self.states)
        for name in names:
            own = [s for s in states if s.name == name]
            # (from, to, expires) for each state; the one in force at `since` counts from `since`.
            for index, state in enumerate(own):
                start = max(state.at, since)
                end = min(own[index + 1].at if index + 1 < len(own) else until, until)
                if end <= start:
                    continue
                invalid_from = start if state.expires is None else max(start, state.expires)
                worst = max(worst, end - invalid_from)
            if not own or own[0].at > since:
                first = own[0].at if own else until
                worst = max(worst, min(first, until) - since)
        return worst


def _after(state: SecretState, since: float | Mark) -> bool:
    if isinstance(since, Mark):
        return int(state.resource_version) > since.version
    return since <= state.at


def _before(state: SecretState, until: float | Mark | None) -> bool:
    if until is None:
        return True
    if isinstance(until, Mark):
        return int(state.resource_version) <= until.version
    return state.at <= until


# --- leadership as each replica reports it ---------------------------------------------------------


@dataclass
class LeaderSampler:
    """Polls `simacan_leader` of each operator; an operator that does not answer is not leading."""

    operators: dict[str, Callable[[], OperatorProcess]]
    interval: float = 0.05
    samples: list[tuple[float, dict[str, bool]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LeaderSampler:
        self._thread = threading.Thread(target=self._run, daemon=True, name="leader-sampler")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        with httpx.Client(timeout=0.5) as http:
            while not self._stop.wait(self.interval):
                sample = {name: _leading(http, get()) for name, get in self.operators.items()}
                self.samples.append((time.time(), sample))

    def overlap_seconds(self) -> float:
        """Time during which two or more replicas said they were leading."""
        return self._total(lambda s: sum(s.values()) >= 2)

    def longest_gap_after(self, since: float) -> float:
        """The longest stretch after `since` during which no replica was leading."""
        longest, started = 0.0, None
        for at, sample in self.samples:
            if at < since:
                continue
            if not any(sample.values()):
                started = at if started is None else started
                longest = max(longest, at - started)
            else:
                started = None
        return longest

    def first(self, name: str, leading: bool, since: float = 0.0) -> float | None:
        return next((at for at, s in self.samples if at >= since and s.get(name) == leading), None)

    def _total(self, predicate: Callable[[dict[str, bool]], bool]) -> float:
        total = 0.0
        for (at, sample), (next_at, _) in zip(self.samples, self.samples[1:], strict=False):
            if predicate(sample):
                total += next_at - at
        return total


def _leading(http: httpx.Client, operator: OperatorProcess) -> bool:
    if operator.process is None or operator.process.poll() is not None:
        return False
    try:
        text = http.get(f"http://127.0.0.1:{operator.metrics_port}/metrics").text
    except httpx.HTTPError:
        return False
    return any(line.split()[-1] == "1.0" for line in text.splitlines() if line.startswith("simacan_leader "))


# --- a namespace with N credentials ----------------------------------------------------------------


@dataclass
class Scene:
    """One namespace with credentials served by a fake Auth API; what a fault run acts on."""

    plane: ControlPlane
    operator_kubeconfig: Path
    fake_auth: FakeAuthAPI
    ns: Namespace
    work_dir: Path
    operators: list[OperatorProcess] = field(default_factory=list)

    @property
    def api(self) -> client.ApiClient:
        return self.ns.api

    def quiet_api(self) -> client.ApiClient:
        """An admin client that does not retry (or warn about retrying) while the API is down."""
        configuration = client.Configuration()
        config.load_kube_config(
            config_file=str(self.plane.admin_kubeconfig), client_configuration=configuration
        )  # type: ignore[no-untyped-call]
        configuration.retries = False
        return client.ApiClient(configuration)

    def start_operator(self, *extra: str, kubeconfig: Path | None = None) -> OperatorProcess:
        operator = OperatorProcess(
            kubeconfig or self.operator_kubeconfig,
            self.ns.name,
            self.work_dir / f"operator-{len(self.operators)}.log",
            [*operator_args(self.fake_auth), *extra],
        )
        self.operators.append(operator)
        return operator.start()

    def create_credentials(self, names: Sequence[str], **spec: Any) -> None:
        if self.ns.secret("login") is None:
            self.ns.create_login_secret("login", USERNAME, PASSWORD)
        for name in names:
            self.ns.create_credential(name, credential_spec(self.fake_auth, **spec))

    def all_ready(self, names: Sequence[str], after: float = 0.0) -> bool:
        """Every credential Ready=True with an unexpired token issued after `after` in its Secret."""
        now = time.time()
        for name in names:
            if self.ns.ready_reason(name) != ("True", "TokenValid"):
                return False
            expires = token_expiry(self.ns.secret(name))
            if expires is None or expires <= now:
                return False
            issued = _issued_at(self.ns.secret(name))
            if issued is None or issued < int(after):  # iat is whole seconds
                return False
        return True

    def event_count(self) -> int:
        """Occurrences, not objects: an Event whose count grew counts that many times."""
        return sum(int(e.get("count") or 1) for e in self.ns.events())

    def stop_operators(self) -> None:
        for operator in self.operators:
            if operator.process is not None:
                operator.stop()

    def logs(self) -> str:
        return "\n".join(f"----- {o.log_path.name}\n{o.logs()[-8000:]}" for o in self.operators)


def _issued_at(secret: dict[str, Any] | None) -> float | None:
    claims = token_claims(secret)
    return float(claims["iat"]) if claims and "iat" in claims else None


@contextlib.contextmanager
def scene(
    plane: ControlPlane, operator_kubeconfig: Path, work_dir: Path, lifetime: float, **fake: Any
) -> Iterator[Scene]:
    """A fresh namespace and a fake HTTPS Auth API; operators stopped at the end."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with FakeAuthAPI({USERNAME: PASSWORD}, access_lifetime=lifetime, tls=True, **fake) as fake_auth:
        ns = Namespace.create(api_client(plane.admin_kubeconfig), prefix="fault")
        current = Scene(plane, operator_kubeconfig, fake_auth, ns, work_dir)
        try:
            yield current
        finally:
            current.stop_operators()


@dataclass(frozen=True)
class Figures:
    """One run of one fault, as the fault report prints it."""

    fault: str
    secret_writes: int
    auth_calls: int
    events: int
    longest_invalid: float
    recover: float
    extra: dict[str, float] = field(default_factory=dict)
