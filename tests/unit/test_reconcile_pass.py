"""Reconcile passes in process: a dict-backed Kubernetes, a hand-moved clock, the fake Auth API.

Each test gives Secrets, spec and status, runs passes of a worker, and asserts what a user
sees: Secret writes, the status, the Events and the Auth API calls. The same scenarios run
again as a process against the emulator (tests/integration) and a real API server (tests/e2e);
here they take milliseconds.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from localenv.fakeauth import FakeAuthAPI, Fault
from localenv.pki import ServingCertificate
from simacan_token_operator.app.metrics import Metrics
from simacan_token_operator.auth.client import AuthAPI, http_client
from simacan_token_operator.auth.pool import MIN_FETCH_SPACING_SECONDS, TokenPool
from simacan_token_operator.controller.gates import KUBE_CONCURRENCY
from simacan_token_operator.controller.kinds import Namespaced
from simacan_token_operator.controller.runtime import CONFLICT_RETRY_SECONDS, Runtime
from simacan_token_operator.controller.worker import CredentialWorker
from simacan_token_operator.kube.client import KubeError
from simacan_token_operator.model.schedule import BACKOFF_BASE_SECONDS
from simacan_token_operator.model.spec import AuthURLPolicy
from simacan_token_operator.reconcile.consumerstep import RESTART_RETRY_SECONDS
from simacan_token_operator.reconcile.tokensecret import (
    ACCOUNT_ANNOTATION,
    EXPIRES_AT_ANNOTATION,
    parse_rfc3339,
)
from tests.unit.conftest import PASSWORD, USERNAME, FakeClock
from tests.unit.fakekube import FakeKube, RecordedEvent

NS = "logistics"
OTHER_NS = "planning"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class World:
    """One operator process (pool, workers) over a Kubernetes that outlives it."""

    kube: FakeKube
    clock: FakeClock
    fake_auth: FakeAuthAPI
    api: AuthAPI
    credentials: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    workers: dict[tuple[str, str], CredentialWorker] = field(default_factory=dict)
    runtime: Runtime | None = None

    def __post_init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """A new process: nothing in memory but what it reads back from the API."""
        self.runtime = Runtime(
            kube=self.kube,
            pool=TokenPool(self.api, clock=self.clock),
            auth_policy=AuthURLPolicy(frozenset({f"127.0.0.1:{self.fake_auth.port}"})),
            metrics=Metrics(),
            clock=self.clock,
        )
        self.workers = {}

    def login_secret(self, name: str = "login", namespace: str = NS, **data: str) -> None:
        data = data or {"username": USERNAME, "password": PASSWORD}
        self.kube.put_secret(
            namespace, {"metadata": {"name": name}, "data": {k: b64(v) for k, v in data.items()}}
        )

    def credential(self, name: str = "fleet-api", namespace: str = NS, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": "auth.simacan.com/v1alpha1",
            "kind": "SimacanCredential",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "annotations": {},
            },
            "spec": {"credentialsSecretRef": {"name": "login"}, "authURL": self.fake_auth.base_url, **spec},
        }
        self.credentials[(namespace, name)] = body
        return body

    def edit(self, name: str = "fleet-api", namespace: str = NS, **spec: Any) -> None:
        body = self.credentials[(namespace, name)]
        body["spec"] = {**body["spec"], **spec}
        body["metadata"]["generation"] += 1
        self.kube.edited(namespace, name)

    def annotate(self, value: str, name: str = "fleet-api", namespace: str = NS) -> None:
        self.credentials[(namespace, name)]["metadata"]["annotations"] = {
            "auth.simacan.com/refresh-requested-at": value
        }
        self.kube.edited(namespace, name)

    async def run(self, name: str = "fleet-api", namespace: str = NS) -> float | None:
        """One pass of the credential's worker, started as a new process would start it, or woken
        as a watch event of its Secrets would wake it."""
        key = (namespace, name)
        worker = self.workers.get(key)
        body = self.kube.watched(self.credentials[key])  # with its resourceVersion and status
        if worker is None:
            assert self.runtime is not None
            worker = CredentialWorker(body, self.runtime, Namespaced())
            self.workers[key] = worker
        else:
            worker.update({k: v for k, v in body.items() if k != "status"}, body["status"])
            worker.nudge()
        return await worker.run_once()

    def status(self, name: str = "fleet-api", namespace: str = NS) -> dict[str, Any]:
        return self.kube.statuses.get((namespace, name), {})

    def ready(self, name: str = "fleet-api", namespace: str = NS) -> tuple[str, str]:
        condition = self.status(name, namespace)["conditions"][0]
        return condition["status"], condition["reason"]

    def token(self, name: str = "fleet-api", namespace: str = NS) -> str:
        secret = self.kube.secrets[(namespace, name)]
        return base64.b64decode(secret["data"]["token"]).decode()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_auth(signing_key: rsa.RSAPrivateKey, certificate: ServingCertificate, clock: FakeClock) -> Any:
    with FakeAuthAPI(
        {USERNAME: PASSWORD}, clock=clock, signing_key=signing_key, certificate=certificate
    ) as fake:
        yield fake


@pytest.fixture
async def world(fake_auth: FakeAuthAPI, clock: FakeClock) -> AsyncIterator[World]:
    async with http_client(str(fake_auth.ca_file)) as http:
        yield World(FakeKube(), clock, fake_auth, AuthAPI(http, clock=clock))


async def issued(world: World, **spec: Any) -> str:
    """The common start: a login Secret, a credential, one pass that issues the first token."""
    world.login_secret()
    world.credential(**spec)
    await world.run()
    assert world.ready() == ("True", "TokenValid")
    return world.token()


def refresh_due(world: World) -> float:
    due = parse_rfc3339(world.status()["nextRefreshAt"])
    assert due is not None
    return due + 1


# -- the first pass, one row per input --------------------------------------------------------


@dataclass(frozen=True)
class Row:
    ready: tuple[str, str]
    events: list[str]
    calls: int
    writes: int


async def first_pass(world: World, setup: str) -> None:
    """Build the inputs a row names, then run one pass."""
    login = {"username": USERNAME, "password": PASSWORD}
    spec: dict[str, Any] = {}
    if setup == "foreign-secret":
        world.kube.put_secret(NS, {"metadata": {"name": "fleet-api"}, "data": {"token": b64("theirs")}})
    if setup == "credentials-missing":
        login = {}
    if setup == "password-key-missing":
        login = {"username": USERNAME}
    if setup == "custom-keys":
        login = {"user": USERNAME, "pass": PASSWORD}
        spec["credentialsSecretRef"] = {"name": "login", "usernameKey": "user", "passwordKey": "pass"}
    if setup == "wrong-password":
        login["password"] = "not-the-password"
    if setup == "password-with-final-newline":
        login["password"] = PASSWORD + "\n"
    if setup == "password-with-final-crlf":
        login["password"] = PASSWORD + "\r\n"
    if setup == "password-with-spaces-is-kept":
        world.fake_auth.set_password(USERNAME, "  spaced out  ")
        login["password"] = "  spaced out  "
    if setup == "password-with-two-newlines":
        login["password"] = PASSWORD + "\n\n"
    if setup == "host-not-allowed":
        spec["authURL"] = "https://auth.evil.example/api/v1"
    if setup == "port-not-allowed":
        spec["authURL"] = f"https://127.0.0.1:{world.fake_auth.port + 1}/api/v1"
    if setup == "bad-refresh-before":
        spec["refreshBefore"] = "soon"
    if setup == "path-in-secret-name":
        spec["secretName"] = "../../kube-system/secrets/x"
    if setup == "suspended":
        spec["suspend"] = True
    if setup == "not-json":
        world.fake_auth.fail_next("password", Fault.not_json())
    if setup == "outage":
        world.fake_auth.fail_next("password", Fault.http_error(503))
    if login:
        world.login_secret(**login)
    world.credential(**spec)
    await world.run()


@pytest.mark.parametrize(
    ("setup", "row"),
    [
        pytest.param("ok", Row(("True", "TokenValid"), ["Issued"], 1, 1), id="ok"),
        pytest.param("custom-keys", Row(("True", "TokenValid"), ["Issued"], 1, 1), id="custom-keys"),
        pytest.param(
            "password-with-final-newline", Row(("True", "TokenValid"), ["Issued"], 1, 1), id="final-newline"
        ),
        pytest.param("password-with-final-crlf", Row(("True", "TokenValid"), ["Issued"], 1, 1), id="crlf"),
        pytest.param(
            "password-with-spaces-is-kept", Row(("True", "TokenValid"), ["Issued"], 1, 1), id="spaces"
        ),
        pytest.param(
            "password-with-two-newlines",
            Row(("False", "InvalidCredentials"), ["InvalidCredentials"], 1, 0),
            id="only-one-newline-is-stripped",
        ),
        pytest.param(
            "foreign-secret", Row(("False", "SecretConflict"), ["SecretConflict"], 0, 0), id="foreign-secret"
        ),
        pytest.param(
            "credentials-missing",
            Row(("False", "CredentialsSecretNotFound"), ["CredentialsSecretNotFound"], 0, 0),
            id="credentials-missing",
        ),
        pytest.param(
            "password-key-missing",
            Row(("False", "CredentialsKeyMissing"), ["CredentialsKeyMissing"], 0, 0),
            id="password-key-missing",
        ),
        pytest.param(
            "wrong-password",
            Row(("False", "InvalidCredentials"), ["InvalidCredentials"], 1, 0),
            id="wrong-pw",
        ),
        pytest.param(
            "host-not-allowed",
            Row(("False", "AuthURLNotAllowed"), ["AuthURLNotAllowed"], 0, 0),
            id="host-not-allowed",
        ),
        pytest.param(
            "port-not-allowed",
            Row(("False", "AuthURLNotAllowed"), ["AuthURLNotAllowed"], 0, 0),
            id="port-not-allowed",
        ),
        pytest.param(
            "bad-refresh-before",
            Row(("False", "InvalidSpec"), ["InvalidSpec"], 0, 0),
            id="bad-refresh-before",
        ),
        pytest.param(
            "path-in-secret-name", Row(("False", "InvalidSpec"), ["InvalidSpec"], 0, 0), id="path-in-name"
        ),
        pytest.param("suspended", Row(("False", "Suspended"), [], 0, 0), id="suspended"),
        pytest.param(
            "not-json", Row(("False", "MalformedResponse"), ["MalformedResponse"], 1, 0), id="not-json"
        ),
        pytest.param("outage", Row(("False", "AuthUnavailable"), ["AuthUnavailable"], 1, 0), id="outage"),
    ],
)
async def test_first_pass(world: World, setup: str, row: Row) -> None:
    await first_pass(world, setup)

    assert world.ready() == row.ready
    assert world.kube.event_reasons() == row.events
    assert world.fake_auth.count() == row.calls
    assert len(world.kube.secret_writes) == row.writes
    if row.ready[0] == "False":
        assert world.status()["conditions"][0]["message"], "a problem always says what to do"


async def test_a_problem_is_announced_once_not_on_every_retry(world: World) -> None:
    world.login_secret(username=USERNAME, password="wrong")
    world.credential()
    for _ in range(3):
        await world.run()
        world.clock.advance(600)

    assert world.kube.event_reasons() == ["InvalidCredentials"]
    assert world.fake_auth.count() == 1, "a rejected password is not tried again until something changes"


# -- lifecycles ---------------------------------------------------------------------------------


async def test_first_token_is_written_with_its_expiry_and_owner(world: World) -> None:
    token = await issued(world)

    secret = world.kube.secrets[(NS, "fleet-api")]
    owner = secret["metadata"]["ownerReferences"][0]
    assert owner["uid"] == world.credentials[(NS, "fleet-api")]["metadata"]["uid"] and owner["controller"]
    assert base64.b64decode(secret["data"]["token_type"]) == b"Bearer"
    assert world.status()["expiresAt"] == base64.b64decode(secret["data"]["expires_at"]).decode()
    assert world.status()["tokenFingerprint"] and world.status()["tokenFingerprint"] not in token


async def test_refreshes_at_the_planned_time_quietly(world: World) -> None:
    first = await issued(world)
    wake_at = await world.run()
    assert world.fake_auth.count() == 1 and len(world.kube.secret_writes) == 1, "nothing due: nothing done"
    assert wake_at is not None

    world.clock.now = wake_at + 1
    await world.run()

    assert world.token() != first
    assert (world.fake_auth.count("password"), world.fake_auth.count("refresh")) == (1, 1)
    assert world.kube.event_reasons() == ["Issued"], "a routine refresh posts no Event"


async def test_rejected_refresh_falls_back_to_the_password(world: World) -> None:
    await issued(world)
    world.fake_auth.fail_next("refresh", Fault.http_error(403))
    world.clock.now = refresh_due(world)
    await world.run()

    assert world.ready() == ("True", "TokenValid")
    assert (world.fake_auth.count("password", status=200), world.fake_auth.count("refresh")) == (2, 1)


async def test_restart_makes_no_call_and_no_write_while_the_token_is_valid(world: World) -> None:
    await issued(world)
    patches = world.kube.status_patches

    world.restart()
    await world.run()

    assert world.fake_auth.count() == 1
    assert len(world.kube.secret_writes) == 1
    assert world.kube.status_patches == patches


async def test_the_pass_judges_a_stored_token_by_its_own_clock_not_the_wall_clock(world: World) -> None:
    """The pass reads time only from gathered.now: a token read back after a restart is judged by
    the same clock that issued it, even when that clock is days away from the wall clock."""
    world.clock.advance(10 * 86400)  # further than any token may live (MAX_TOKEN_LIFETIME)
    await issued(world)

    world.restart()
    await world.run()

    assert world.fake_auth.count() == 1, "the stored token was kept: no login"
    assert len(world.kube.secret_writes) == 1
    assert world.ready() == ("True", "TokenValid")


async def test_restart_refreshes_at_the_stored_time_with_a_login(world: World) -> None:
    await issued(world)
    world.restart()
    world.clock.now = refresh_due(world)
    await world.run()

    calls = (world.fake_auth.count("password"), world.fake_auth.count("refresh"))
    assert calls == (2, 0), "no refresh token is stored"


async def test_equal_credentials_share_one_login(world: World) -> None:
    world.login_secret()
    for name in ("a", "b", "c"):
        world.credential(name)
    await asyncio.gather(*(world.run(name) for name in ("a", "b", "c")))

    assert world.fake_auth.count() == 1
    assert len({world.token(name) for name in ("a", "b", "c")}) == 1


async def test_password_rotation_logs_in_again(world: World) -> None:
    first = await issued(world)
    world.fake_auth.set_password(USERNAME, "rotated-Pw-81")
    world.login_secret(username=USERNAME, password="rotated-Pw-81")
    await world.run()

    assert world.token() != first
    assert world.kube.event_reasons() == ["Issued", "PasswordChanged"]


async def test_wrong_password_is_retried_once_the_secret_changes(world: World) -> None:
    world.login_secret(username=USERNAME, password="wrong")
    world.credential()
    await world.run()
    world.login_secret()
    await world.run()

    assert world.ready() == ("True", "TokenValid")
    assert world.kube.event_reasons() == ["InvalidCredentials", "Recovered"]


async def test_deleted_or_edited_secret_is_restored_without_a_login(world: World) -> None:
    token = await issued(world)

    world.kube.remove_secret(NS, "fleet-api")
    await world.run()
    assert world.token() == token

    world.clock.advance(1)  # restores in a row back off: the second one comes a second later
    secret = world.kube.secrets[(NS, "fleet-api")]
    world.kube.put_secret(NS, {**secret, "data": {**secret["data"], "token": b64("garbage")}})
    await world.run()
    assert world.token() == token

    world.clock.advance(2)
    secret = world.kube.secrets[(NS, "fleet-api")]
    world.kube.put_secret(NS, {**secret, "data": {**secret["data"], "token_type": b64("Basic")}})
    await world.run()
    assert base64.b64decode(world.kube.secrets[(NS, "fleet-api")]["data"]["token_type"]) == b"Bearer"

    assert world.fake_auth.count() == 1
    assert world.kube.event_reasons() == ["Issued", "SecretMissing", "SecretInvalid", "SecretModified"]


async def test_spec_change_writes_the_new_secret(world: World) -> None:
    token = await issued(world)
    world.edit(secretName="renamed", secretTemplate={"labels": {"tier": "gold"}})
    await world.run()

    assert world.token("renamed") == token
    assert world.kube.secrets[(NS, "renamed")]["metadata"]["labels"]["tier"] == "gold"
    assert world.status()["secretName"] == "renamed" and world.status()["observedGeneration"] == 2


async def test_suspend_keeps_the_token_until_it_expires(world: World) -> None:
    await issued(world)
    world.edit(suspend=True)
    await world.run()
    assert world.ready() == ("True", "Suspended")

    world.clock.advance(3601)
    await world.run()
    assert world.ready() == ("False", "Suspended")
    assert world.fake_auth.count() == 1


async def test_refresh_request_is_handled_once(world: World) -> None:
    first = await issued(world)
    world.clock.advance(1)
    world.annotate("2026-11-28T10:00:00Z")
    await world.run()
    await world.run()

    assert world.token() != first
    assert world.fake_auth.count() == 2
    assert world.status()["lastRefreshRequest"] == "2026-11-28T10:00:00Z"
    assert world.kube.event_reasons() == ["Issued", "RefreshRequested"]


async def test_outage_keeps_the_valid_token_then_recovers(world: World) -> None:
    token = await issued(world)
    world.fake_auth.set_fault("refresh", Fault.http_error(503))
    world.fake_auth.set_fault("password", Fault.http_error(503))
    world.clock.now = refresh_due(world)
    wake_at = await world.run()

    assert world.ready() == ("True", "AuthUnavailable"), "a valid token keeps Ready True"
    assert world.token() == token
    assert wake_at is not None and wake_at > world.clock.now

    world.clock.advance(3600)
    await world.run()
    assert world.ready() == ("False", "AuthUnavailable")
    assert world.token() == token, "a failed refresh never removes the token"

    world.fake_auth.clear_faults()
    world.clock.advance(600)
    await world.run()
    assert world.ready() == ("True", "TokenValid")
    assert world.kube.event_reasons() == ["Issued", "AuthUnavailable", "Recovered"]


async def test_retry_after_sets_the_next_attempt(world: World) -> None:
    world.login_secret()
    world.credential()
    world.fake_auth.fail_next("password", Fault.rate_limited(120))
    wake_at = await world.run()

    assert wake_at is not None and wake_at >= world.clock.now + 120


async def test_ready_turns_false_when_the_token_expires_during_a_slow_request(world: World) -> None:
    await issued(world)
    annotations = world.kube.secrets[(NS, "fleet-api")]["metadata"]["annotations"]
    world.clock.now = parse_rfc3339(annotations[EXPIRES_AT_ANNOTATION]) - 0.3  # type: ignore[operator]
    world.fake_auth.fail_next("refresh", Fault.slow(3))

    started = asyncio.get_running_loop().time()
    await world.run()

    assert asyncio.get_running_loop().time() - started < 2, "the pass does not wait out the slow request"
    assert world.ready() == ("False", "TokenExpired")
    assert world.token(), "the Secret keeps what it had"


async def test_short_lived_tokens_are_spaced_and_say_so(world: World) -> None:
    world.clock.now = float(int(world.clock.now))  # whole seconds: `exp` makes these tokens live 1 s
    world.fake_auth.access_lifetime = 1.5
    await issued(world)
    world.clock.advance(1.1)  # due after 2/3 s, and the last request was 1.1 s ago: allowed
    await world.run()
    world.clock.advance(0.7)  # due again, but only 0.7 s after the last request: held back
    await world.run()

    assert world.fake_auth.count() == 2
    assert world.ready()[1] == "TokenLifetimeTooShort"
    assert "TokenLifetimeTooShort" in world.kube.event_reasons()
    world.clock.advance(MIN_FETCH_SPACING_SECONDS)
    await world.run()
    assert world.fake_auth.count() == 3


# -- several writers and several namespaces ----------------------------------------------------


async def test_a_second_operator_adopts_the_first_ones_token(world: World, fake_auth: FakeAuthAPI) -> None:
    token = await issued(world)
    first_operator = world.workers
    world.restart()  # a second process, with a pool of its own, running beside the first
    second_operator = world.workers
    await world.run()
    assert world.token() == token and len(world.kube.secret_writes) == 1

    # Both refresh when due; each writes at most once and then adopts the other's token.
    world.clock.now = refresh_due(world)
    for _ in range(3):
        world.workers = first_operator
        await world.run()
        world.workers = second_operator
        await world.run()

    assert len(world.kube.secret_writes) <= 3, world.kube.secret_writes
    assert fake_auth.count() <= 3
    assert world.kube.event_reasons() == ["Issued"]


async def test_a_forged_token_in_one_namespace_never_reaches_another(world: World) -> None:
    await issued(world)
    secret = world.kube.secrets[(NS, "fleet-api")]
    forged = (
        "eyJhbGciOiJub25lIn0." + base64.urlsafe_b64encode(b'{"exp": 4102444800}').decode().rstrip("=") + "."
    )
    annotations = {**secret["metadata"]["annotations"], EXPIRES_AT_ANNOTATION: "2100-01-01T00:00:00.000Z"}
    world.kube.put_secret(
        NS,
        {
            **secret,
            "metadata": {**secret["metadata"], "annotations": annotations},
            "data": {"token": b64(forged)},
        },
    )
    world.restart()
    await world.run()
    assert world.token() != forged, "an implausible token is replaced, even after a restart"

    world.login_secret(namespace=OTHER_NS)
    world.credential(namespace=OTHER_NS)
    await world.run(namespace=OTHER_NS)
    assert world.token(namespace=OTHER_NS) != forged
    assert world.kube.secrets[(OTHER_NS, "fleet-api")]["metadata"]["annotations"][ACCOUNT_ANNOTATION]


async def test_statuses_and_events_never_carry_secrets(world: World) -> None:
    await issued(world)
    world.fake_auth.fail_next("refresh", Fault.http_error(500))
    world.clock.now = refresh_due(world)
    await world.run()
    text = repr(world.kube.statuses) + repr(world.kube.events)

    assert PASSWORD not in text
    for token in world.fake_auth.issued_tokens:
        assert token.token not in text


def metric(world: World, name: str, credential: str = "fleet-api") -> float | None:
    assert world.runtime is not None and isinstance(world.runtime.metrics, Metrics)
    value: float | None = world.runtime.metrics.registry.get_sample_value(
        name, {"namespace": NS, "name": credential}
    )
    return value


async def test_metrics_show_a_failing_refresh_while_the_old_token_is_valid(world: World) -> None:
    await issued(world)
    assert metric(world, "simacan_credential_ready") == 1
    assert metric(world, "simacan_credential_failing") == 0
    expiry, issued_at = (
        metric(world, "simacan_token_expiry_timestamp_seconds"),
        metric(world, "simacan_token_issued_timestamp_seconds"),
    )
    assert expiry is not None and issued_at is not None and 3500 < expiry - issued_at <= 3600

    world.fake_auth.set_fault("refresh", Fault.http_error(503))
    world.fake_auth.set_fault("password", Fault.http_error(503))
    world.clock.now = refresh_due(world)
    await world.run()

    assert metric(world, "simacan_credential_ready") == 1, "the old token is still valid"
    assert metric(world, "simacan_credential_failing") == 1


async def test_stopping_a_worker_removes_its_series(world: World) -> None:
    await issued(world)
    await world.workers[(NS, "fleet-api")].stop()

    assert metric(world, "simacan_credential_ready") is None
    assert metric(world, "simacan_token_expiry_timestamp_seconds") is None


# -- consumers: extra keys, rollout restarts, stale consumers (issue 11) ------------------------


def deployment(
    name: str = "app", *, env_from: str | None = None, sub_path: str | None = None
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": "busybox"}
    volumes: list[dict[str, Any]] = []
    if env_from:
        container["env"] = [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": env_from, "key": "token"}}}
        ]
    if sub_path:
        volumes = [{"name": "t", "secret": {"secretName": sub_path}}]
        container["volumeMounts"] = [{"name": "t", "mountPath": "/token", "subPath": "token"}]
    return {
        "metadata": {"name": name, "creationTimestamp": "2020-01-01T00:00:00Z"},
        "spec": {"template": {"spec": {"containers": [container], "volumes": volumes}}},
    }


async def test_extra_keys_are_rendered_from_templates(world: World) -> None:
    token = await issued(
        world,
        secretTemplate={
            "data": {
                "authorization": "Bearer {{ .token }}",
                ".env": "TOKEN={{.token}}\nEXP={{ .expiresAt }}\n",
            }
        },
    )
    data = world.kube.secrets[(NS, "fleet-api")]["data"]
    assert base64.b64decode(data["authorization"]).decode() == f"Bearer {token}"
    assert base64.b64decode(data[".env"]).decode() == f"TOKEN={token}\nEXP={world.status()['expiresAt']}\n"
    assert {"token", "token_type", "expires_at"} <= set(data)


@pytest.mark.parametrize(
    "template",
    [
        pytest.param({"x": "{{ .password }}"}, id="unknown-placeholder"),
        pytest.param({"x": "{{ token }}"}, id="malformed-placeholder"),
        pytest.param({"token": "{{ .token }}"}, id="standard-key"),
        pytest.param({"bad/key": "{{ .token }}"}, id="invalid-key"),
    ],
)
async def test_bad_templates_are_invalid_spec(world: World, template: dict[str, str]) -> None:
    world.login_secret()
    world.credential(secretTemplate={"data": template})
    await world.run()

    assert world.ready() == ("False", "InvalidSpec")
    assert world.fake_auth.count() == 0


async def test_restart_target_is_restarted_once_per_new_token(world: World) -> None:
    world.kube.put_workload(NS, "Deployment", deployment(env_from="fleet-api"))
    await issued(
        world, rolloutRestartTargets=[{"kind": "Deployment", "name": "app"}], minRestartInterval="1s"
    )
    assert len(world.kube.restarts) == 1, "it predates the first token"

    await world.run()  # a no-op pass
    world.edit(secretTemplate={"labels": {"a": "b"}})  # a metadata edit
    await world.run()
    world.restart()  # a new process, as after a crash or a leader change
    await world.run()
    assert len(world.kube.restarts) == 1

    world.clock.now = refresh_due(world)
    await world.run()
    assert len(world.kube.restarts) == 2
    assert world.status()["restarts"][0]["name"] == "app"
    assert world.status()["conditions"][1]["status"] == "False", "a restart target is not a stale consumer"
    assert world.kube.event_reasons().count("RolloutRestarted") == 2


async def test_restart_within_the_minimum_interval_is_postponed_not_dropped(world: World) -> None:
    world.kube.put_workload(NS, "Deployment", deployment(env_from="fleet-api"))
    await issued(
        world, rolloutRestartTargets=[{"kind": "Deployment", "name": "app"}], minRestartInterval="1h"
    )
    world.annotate("now")
    world.clock.advance(1)
    wake_at = await world.run()

    assert len(world.kube.restarts) == 1, "a second token within the hour waits"
    first_restart = world.clock.now - 1
    for _ in range(3):  # wakes at the next refresh, then when the hour is up
        assert wake_at is not None and wake_at <= first_restart + 3600 + 1
        world.clock.now = wake_at
        wake_at = await world.run()
        if len(world.kube.restarts) == 2:
            break
    assert len(world.kube.restarts) == 2
    assert first_restart + 3600 - 0.001 <= world.clock.now < first_restart + 3600 + 2  # ms in the annotation


async def test_restart_missed_by_a_crash_happens_after_the_restart(world: World) -> None:
    """The Secret was written, then the process died before patching the target."""
    await issued(world)
    world.kube.put_workload(NS, "Deployment", deployment())  # created before the token? no: after
    world.kube.workloads[(NS, "Deployment", "app")]["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"
    world.edit(rolloutRestartTargets=[{"kind": "Deployment", "name": "app"}])
    world.restart()
    await world.run()

    assert len(world.kube.restarts) == 1


async def test_two_operators_restart_a_target_once(world: World) -> None:
    world.kube.put_workload(NS, "Deployment", deployment())
    await issued(world, rolloutRestartTargets=[{"kind": "Deployment", "name": "app"}])
    first = world.workers
    world.restart()
    await world.run()

    world.workers = first
    await world.run()
    assert len(world.kube.restarts) == 1


async def test_missing_target_is_a_warning_not_a_failure(world: World) -> None:
    await issued(world, rolloutRestartTargets=[{"kind": "StatefulSet", "name": "gone"}])
    await world.run()

    assert world.ready() == ("True", "TokenValid")
    assert world.kube.event_reasons().count("RestartTargetNotFound") == 1


APP = {"kind": "Deployment", "name": "app"}
DB = {"kind": "StatefulSet", "name": "db"}


def restarts_condition(world: World) -> dict[str, Any]:
    found = [c for c in world.status().get("conditions", []) if c["type"] == "RolloutRestarts"]
    assert len(found) == 1, world.status().get("conditions")
    condition: dict[str, Any] = found[0]
    return condition


def not_permitted_warnings(world: World) -> list[RecordedEvent]:
    return [e for e in world.kube.events if e.reason == "RestartNotPermitted"]


@pytest.mark.parametrize(
    ("forbidden", "refused", "restarted"),
    [
        pytest.param({("get", "Deployment")}, "get Deployment/app", {"StatefulSet"}, id="read-forbidden"),
        pytest.param(
            {("patch", "Deployment")}, "patch Deployment/app", {"StatefulSet"}, id="patch-forbidden"
        ),
        pytest.param(
            {("get", "Deployment"), ("patch", "Deployment")},
            "get Deployment/app",
            {"StatefulSet"},
            id="read-and-patch-forbidden",
        ),
        pytest.param(
            {("patch", "Deployment"), ("get", "StatefulSet")},
            "patch Deployment/app, get StatefulSet/db",
            set(),
            id="patch-one-read-other-forbidden",
        ),
    ],
)
async def test_a_forbidden_restart_target_is_reported_once_while_the_token_is_kept_fresh(
    world: World, forbidden: set[tuple[str, str]], refused: str, restarted: set[str]
) -> None:
    world.kube.put_workload(NS, "Deployment", deployment("app", env_from="fleet-api"))
    world.kube.put_workload(NS, "StatefulSet", deployment("db", env_from="fleet-api"))
    world.kube.forbidden_workload_verbs |= forbidden
    first = await issued(world, rolloutRestartTargets=[APP, DB], minRestartInterval="1s")
    for _ in range(3):  # the pass right after a refused patch reports it; then no-op passes
        await world.run()
    world.clock.now = refresh_due(world)  # a new token: the targets are due again
    for _ in range(3):
        await world.run()

    assert world.token() != first, "the token was refreshed"
    assert world.ready() == ("True", "TokenValid")
    condition = restarts_condition(world)
    assert (condition["status"], condition["reason"]) == ("False", "RestartNotPermitted")
    assert condition["message"].startswith(f"not permitted (HTTP 403): {refused}; the token Secret is kept")
    assert "add the component manifests/components/rollout-restarts" in condition["message"]
    (warning,) = not_permitted_warnings(world)
    assert (warning.type, warning.message) == ("Warning", condition["message"])
    assert {kind for kind, _, _ in world.kube.restarts} == restarted
    assert [entry["kind"] for entry in world.status().get("restarts", [])] == sorted(restarted)


async def test_a_refused_restart_is_tried_again_and_clears_once_permitted(world: World) -> None:
    world.kube.put_workload(NS, "Deployment", deployment("app", env_from="fleet-api"))
    world.kube.forbidden_workload_verbs.add(("patch", "Deployment"))
    await issued(world, rolloutRestartTargets=[APP])
    refused_at = world.clock.now
    wake_at = await world.run()
    assert restarts_condition(world)["status"] == "False"
    assert wake_at == refused_at + RESTART_RETRY_SECONDS, "tried again in five minutes, not at the refresh"

    world.kube.forbidden_workload_verbs.clear()  # the component is applied
    world.clock.now = wake_at
    await world.run()
    assert len(world.kube.restarts) == 1
    await world.run()
    condition = restarts_condition(world)
    assert (condition["status"], condition["reason"]) == ("True", "RestartsPermitted")
    assert len(not_permitted_warnings(world)) == 1


async def test_an_operator_restart_does_not_repeat_the_not_permitted_warning(world: World) -> None:
    world.kube.put_workload(NS, "Deployment", deployment("app", env_from="fleet-api"))
    world.kube.forbidden_workload_verbs.add(("patch", "Deployment"))
    await issued(world, rolloutRestartTargets=[APP])
    await world.run()
    reported = restarts_condition(world)
    patches = world.kube.status_patches

    world.restart()  # a new process knows the refusal only from the status
    for _ in range(3):
        await world.run()

    assert restarts_condition(world) == reported
    assert world.kube.status_patches == patches, "the status stays as it was"
    assert len(not_permitted_warnings(world)) == 1


async def test_a_refused_restart_is_reported_by_the_very_next_pass(world: World) -> None:
    """The running loop, not a test, starts the pass that reports a refused patch."""
    assert world.runtime is not None
    world.kube.put_workload(NS, "Deployment", deployment("app", env_from="fleet-api"))
    world.kube.forbidden_workload_verbs.add(("patch", "Deployment"))
    world.login_secret()
    body = world.kube.watched(world.credential(rolloutRestartTargets=[APP]))
    worker = CredentialWorker(body, world.runtime, Namespaced())
    worker.start()
    try:
        for _ in range(500):  # up to 5 s; the next planned pass is the refresh, 40 (fake) minutes on
            if not_permitted_warnings(world):
                break
            await asyncio.sleep(0.01)
        assert len(not_permitted_warnings(world)) == 1
        assert restarts_condition(world)["status"] == "False"
        assert world.ready() == ("True", "TokenValid")
    finally:
        await worker.stop()


async def surveyed(world: World) -> None:
    """Until the workload survey the last pass started is done, then a pass that sees it."""
    assert world.runtime is not None and world.runtime.workloads is not None
    await world.runtime.workloads.settled()
    await world.run()


async def test_env_and_subpath_consumers_are_warned_about_once(world: World) -> None:
    world.kube.put_workload(NS, "Deployment", deployment("env-reader", env_from="fleet-api"))
    world.kube.put_workload(NS, "StatefulSet", deployment("subpath-reader", sub_path="fleet-api"))
    world.kube.put_workload(NS, "DaemonSet", deployment("other", env_from="someone-elses-secret"))
    await issued(world)
    await surveyed(world)
    await world.run()

    stale = next(c for c in world.status()["conditions"] if c["type"] == "ConsumersStale")
    assert stale["status"] == "True"
    assert world.status()["staleConsumers"] == ["Deployment/env-reader", "StatefulSet/subpath-reader"]
    assert world.status()["staleConsumerCount"] == 2
    assert world.kube.event_reasons().count("ConsumersStale") == 1


async def test_stale_consumers_are_named_up_to_20_and_counted(world: World) -> None:
    """Thousands of env-var consumers must not make a status patch the API server refuses."""
    names = [f"reader-{i:02}-" + "x" * 200 for i in range(30)]
    for name in names:
        world.kube.put_workload(NS, "Deployment", deployment(name, env_from="fleet-api"))
    await issued(world)
    await surveyed(world)

    status = world.status()
    assert status["staleConsumers"] == [f"Deployment/{name}" for name in names[:20]]
    assert status["staleConsumerCount"] == 30
    stale = next(c for c in status["conditions"] if c["type"] == "ConsumersStale")
    assert stale["status"] == "True"
    assert len(stale["message"]) <= 1024
    assert stale["message"].startswith(f"Deployment/{names[0]}, Deployment/{names[1]}")
    # Four names of 221 characters fit in 1 KiB with the rest of the message, five do not.
    assert stale["message"].count("Deployment/") == 4
    assert " and 26 more keep their first token" in stale["message"]
    warning = next(e for e in world.kube.events if e.reason == "ConsumersStale")
    assert len(warning.message) <= 1024 and "more read Secret fleet-api" in warning.message

    world.restart()  # a new process remembers the shown names and the count from the status
    await world.run()
    await surveyed(world)
    assert world.kube.event_reasons().count("ConsumersStale") == 1


async def test_a_long_stale_list_from_an_older_operator_is_cut_to_20(world: World) -> None:
    """Where the check is off the last status is kept, but never more names than the CRD allows."""
    world.kube.forbidden_namespaces.add(NS)
    old = [f"Deployment/reader-{i:02}" for i in range(30)]
    world.kube.statuses[(NS, "fleet-api")] = {"staleConsumers": old}
    await issued(world)
    await surveyed(world)

    assert world.status()["staleConsumers"] == old[:20]
    assert world.status()["staleConsumerCount"] == 30


async def test_the_workload_verdicts_go_with_the_namespaces_last_credential(world: World) -> None:
    world.kube.put_workload(NS, "Deployment", deployment("env-reader", env_from="fleet-api"))
    await issued(world)
    world.credential("second", secretName="second")
    await world.run("second")
    await surveyed(world)
    assert world.runtime is not None and world.runtime.workloads is not None
    assert world.runtime.workloads.kept == 2

    await world.workers[(NS, "fleet-api")].stop()
    assert world.runtime.workloads.kept == 2
    await world.workers[(NS, "second")].stop()
    assert world.runtime.workloads.kept == 0


async def test_stale_consumer_check_is_off_where_listing_is_forbidden(world: World) -> None:
    world.kube.forbidden_namespaces.add(NS)
    world.kube.put_workload(NS, "Deployment", deployment("env-reader", env_from="fleet-api"))
    await issued(world)
    await surveyed(world)

    assert all(c["type"] != "ConsumersStale" for c in world.status()["conditions"])
    assert "ConsumersStale" not in world.kube.event_reasons()


async def test_passes_waiting_for_a_slow_auth_api_hold_no_kubernetes_slot(world: World) -> None:
    """More passes wait on a dripping Auth API than the gate has slots; another still completes."""
    assert world.runtime is not None
    slow = KUBE_CONCURRENCY + 4
    for i in range(slow):
        world.fake_auth.add_user(f"slow-{i}", "pw")
        world.login_secret(f"login-{i}", username=f"slow-{i}", password="pw")
        world.credential(f"slow-{i}", credentialsSecretRef={"name": f"login-{i}"})
    world.fake_auth.fail_next("password", Fault.drip(2.0), times=slow)
    waiting: list[asyncio.Task[float | None]] = []
    try:
        # One pass at a time until its request is under way: 20 connections at once overflow the
        # fake's listen backlog (5), and the kernel sends a dropped SYN again only after 1 s.
        for i in range(slow):
            waiting.append(asyncio.create_task(world.run(f"slow-{i}")))
            for _ in range(200):
                if world.fake_auth.count() > i:
                    break
                await asyncio.sleep(0.01)
        assert world.fake_auth.count() == slow, "every slow pass has its request under way"

        await asyncio.wait_for(issued(world), timeout=5)
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)


async def test_a_password_that_is_not_utf8_is_named_as_such(world: World) -> None:
    world.kube.put_secret(
        NS,
        {
            "metadata": {"name": "login"},
            "data": {"username": b64(USERNAME), "password": base64.b64encode(b"\xff\xfe").decode()},
        },
    )
    world.credential()
    await world.run()

    assert world.ready() == ("False", "CredentialsKeyMissing")
    assert "not UTF-8" in world.status()["conditions"][0]["message"]


async def test_a_conflicting_write_is_retried_shortly_after_reading_again(world: World) -> None:
    world.login_secret()
    world.credential()
    world.kube.write_faults.append(KubeError("creating Secret", 409, "AlreadyExists"))
    wake_at = await world.run()

    assert wake_at == world.clock.now + CONFLICT_RETRY_SECONDS
    assert world.kube.secret_writes == [] and world.kube.status_patches == 0 and world.kube.events == []
    await world.run()
    assert world.ready() == ("True", "TokenValid")
    assert world.fake_auth.count() == 1, "the retry reuses the token obtained for the failed write"


async def test_a_wrongly_presumed_absence_is_read_and_decided_again_in_the_same_pass(world: World) -> None:
    """The watch's list did not show the Secret (made a moment later, not reported yet): the
    create gets 409, the pass reads it and reports the conflict, and nothing is written."""
    assert world.runtime is not None
    world.runtime.known.present.listed(NS, {})
    world.login_secret()
    world.kube.put_secret(NS, {"metadata": {"name": "fleet-api"}, "data": {"token": b64("theirs")}})
    world.credential()
    await world.run()

    assert world.ready() == ("False", "SecretConflict")
    assert world.kube.secret_reads.count((NS, "fleet-api")) == 1
    assert world.kube.secret_writes == [] and world.token() == "theirs"


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_throttled_or_failing_api_server_is_backed_off(world: World, status: int) -> None:
    world.login_secret()
    world.credential()
    world.kube.write_faults.append(KubeError("creating Secret", status, "injected"))
    assert world.runtime is not None
    body = world.kube.watched(world.credentials[(NS, "fleet-api")])
    worker = CredentialWorker(body, world.runtime, Namespaced())
    wake_at = await worker.run_once()

    assert wake_at is not None and wake_at >= world.clock.now + BACKOFF_BASE_SECONDS / 2
    assert world.kube.secret_writes == [] and world.kube.status_patches == 0
