"""Bounds on what a tenant controls, in process: checked before any work, reported on the
offending credential only (limits.py)."""

from __future__ import annotations

import asyncio
import base64
import itertools
from typing import Any

import jwt
import pytest

from simacan_token_operator.controller.gates import KUBE_CONCURRENCY, NAMESPACE_CONCURRENCY
from simacan_token_operator.kube.client import KubeError
from simacan_token_operator.model import limits
from simacan_token_operator.model.schedule import RESTORE_BACKOFF_CAP_SECONDS, restore_delay
from simacan_token_operator.model.spec import SpecError, parse_spec, rendered_size_bound
from simacan_token_operator.model.tokens import TokenParseError, parse_token_response, stored_token
from simacan_token_operator.reconcile.tokensecret import read_stored
from tests.unit.test_reconcile_pass import NS, World, b64, clock, fake_auth, issued, world

FIXTURES = (fake_auth, clock, world)
"""The in-process world of tests/unit/test_reconcile_pass.py, whose fixtures these tests use."""

NOW = 1_800_000_000.0


def long_jwt(chars: int, exp: float = NOW + 3600) -> str:
    """A self-made token of about `chars` characters, as a tenant could plant one."""
    padding = "x" * (max(chars - 200, 0) * 3 // 4)
    return jwt.encode({"exp": exp, "iat": NOW, "pad": padding}, "k" * 32, algorithm="HS256")


# -- tokens -------------------------------------------------------------------------------------


def test_an_access_token_over_the_bound_from_the_auth_api_is_malformed() -> None:
    token = long_jwt(limits.MAX_TOKEN_CHARS + 100)
    assert len(token) > limits.MAX_TOKEN_CHARS
    with pytest.raises(TokenParseError, match="longer than 8192"):
        parse_token_response({"access_token": token, "expires_in": "3600"}, NOW)


def test_a_refresh_token_over_the_bound_is_malformed() -> None:
    payload = {"access_token": long_jwt(1000), "refresh_token": "r" * 9000, "expires_in": "3600"}
    with pytest.raises(TokenParseError, match="refresh_token is longer"):
        parse_token_response(payload, NOW)


def test_a_token_at_the_bound_is_accepted() -> None:
    token = long_jwt(limits.MAX_TOKEN_CHARS - 50)
    assert limits.MAX_TOKEN_CHARS - 200 < len(token) <= limits.MAX_TOKEN_CHARS
    assert parse_token_response({"access_token": token}, NOW).access_token == token
    assert stored_token(token, NOW, now=NOW).expires_at == NOW + 3600


def test_an_oversized_token_in_a_secret_is_not_read_at_all() -> None:
    planted = long_jwt(40 * 1024)
    secret = {"metadata": {"annotations": {}}, "data": {"token": b64(planted)}}
    assert read_stored(secret, NOW).token is None


# -- the spec -----------------------------------------------------------------------------------


def spec_with(**fields: Any) -> dict[str, Any]:
    return {"credentialsSecretRef": {"name": "login"}, **fields}


def test_the_worst_case_render_is_checked_when_the_spec_is_parsed() -> None:
    bomb = {f"key{i}": "{{ .token }}" * 341 for i in range(16)}  # 4,092 characters each: passes the CRD
    with pytest.raises(SpecError, match="65536 bytes") as raised:
        parse_spec("c", NS, spec_with(secretTemplate={"data": bomb}))
    assert raised.value.reason == "InvalidSpec"


def test_six_templates_with_a_token_fit_and_seven_do_not() -> None:
    six = {f"k{i}": "{{ .token }}" for i in range(6)}
    assert rendered_size_bound(six) <= limits.MAX_RENDERED_DATA_BYTES
    parse_spec("c", NS, spec_with(secretTemplate={"data": six}))
    with pytest.raises(SpecError, match="could render"):
        parse_spec("c", NS, spec_with(secretTemplate={"data": {**six, "k6": "{{ .token }}"}}))


def test_plain_templates_at_the_crd_bounds_are_accepted() -> None:
    data = {f"k{i}": "x" * 3000 for i in range(16)}
    assert parse_spec("c", NS, spec_with(secretTemplate={"data": data})).data_templates == data


@pytest.mark.parametrize(
    ("template", "message"),
    [
        pytest.param({"labels": {f"l{i}": "v" for i in range(33)}}, "at most 32", id="33-labels"),
        pytest.param({"labels": {"a/b/c": "v"}}, "not a valid label key", id="label-key-two-slashes"),
        pytest.param({"labels": {"x" * 64: "v"}}, "not a valid label key", id="label-name-64"),
        pytest.param({"labels": {"app": "v" * 64}}, "not a valid label value", id="label-value-64"),
        pytest.param({"labels": {"app": "a b"}}, "not a valid label value", id="label-value-space"),
        pytest.param({"annotations": {f"a{i}": "v" for i in range(33)}}, "at most 32", id="33-annotations"),
        pytest.param({"annotations": {"a": "v" * 4097}}, "longer than 4096", id="annotation-4097"),
        pytest.param({"annotations": {"x" * 318: "v"}}, "not a valid annotation key", id="annotation-key"),
        pytest.param({"data": {f"k{i}": "v" for i in range(17)}}, "at most 16", id="17-data-keys"),
        pytest.param({"data": {"k": "v" * 4097}}, "longer than 4096", id="data-4097"),
    ],
)
def test_template_bounds_are_checked_again_by_the_operator(template: dict[str, Any], message: str) -> None:
    """Objects stored before a tighter CRD keep their old values: the operator checks again."""
    with pytest.raises(SpecError, match=message):
        parse_spec("c", NS, spec_with(secretTemplate=template))


def test_labels_and_annotations_at_their_bounds_are_accepted() -> None:
    labels = {f"example.com/{'l' * 50}{i:02d}": "v" * 63 for i in range(32)}
    annotations = {f"{'p' * 253}/{'a' * 61}{i:02d}": "v" * 4096 for i in range(32)}
    parsed = parse_spec("c", NS, spec_with(secretTemplate={"labels": labels, "annotations": annotations}))
    assert len(parsed.labels) == len(parsed.annotations) == 32


def test_durations_over_32_characters_are_invalid() -> None:
    with pytest.raises(SpecError, match="longer than 32"):
        parse_spec("c", NS, spec_with(refreshBefore="1s" * 17))


def test_min_restart_interval_is_clamped_to_a_minute() -> None:
    assert parse_spec("c", NS, spec_with(minRestartInterval="1s")).min_restart_interval == 60.0
    assert parse_spec("c", NS, spec_with(minRestartInterval="10m")).min_restart_interval == 600.0


# -- refresh requests ---------------------------------------------------------------------------


async def test_an_oversized_refresh_request_is_ignored_with_one_warning(world: World) -> None:
    token = await issued(world)
    world.annotate("2026-12-06T10:00:00Z" + "x" * 100)
    await world.run()
    await world.run()

    assert world.token() == token
    assert world.fake_auth.count() == 1
    assert world.kube.event_reasons() == ["Issued", "RefreshRequestIgnored"]
    assert "lastRefreshRequest" not in world.status()


async def test_a_refresh_request_at_the_bound_is_honoured(world: World) -> None:
    token = await issued(world)
    world.clock.advance(1)
    world.annotate("r" * limits.MAX_REFRESH_REQUEST_CHARS)
    await world.run()

    assert world.token() != token
    assert world.status()["lastRefreshRequest"] == "r" * limits.MAX_REFRESH_REQUEST_CHARS


# -- status -------------------------------------------------------------------------------------


async def test_a_long_problem_message_is_cut_in_status(world: World) -> None:
    world.login_secret()
    world.credential(authURL="https://" + "h" * 2000 + ".example/api")
    await world.run()

    message = world.status()["conditions"][0]["message"]
    assert world.ready() == ("False", "AuthURLNotAllowed")
    assert len(message) <= limits.MAX_CONDITION_MESSAGE_CHARS
    assert message.endswith("[...]")


# -- the API server refuses the write -----------------------------------------------------------


async def test_a_write_the_api_server_refuses_is_reported_once_and_not_retried(world: World) -> None:
    world.login_secret()
    world.credential()
    refused = KubeError("creating Secret logistics/fleet-api", 422, 'Secret "fleet-api" is invalid: too long')
    world.kube.write_faults.append(refused)
    await world.run()

    assert world.ready() == ("False", "InvalidSpec")
    assert "the API server refused to write Secret fleet-api" in world.status()["conditions"][0]["message"]
    for _ in range(3):  # the same inputs: not written again, not announced again
        world.clock.advance(600)
        await world.run()
    assert world.kube.secret_writes == []
    assert world.kube.event_reasons() == ["InvalidSpec"]

    world.edit(secretTemplate={"labels": {"team": "a"}})  # the user changes the spec: tried again
    await world.run()
    assert world.ready() == ("True", "TokenValid")
    assert world.kube.secret_writes == [("create", "fleet-api")]


async def test_a_refused_write_keeps_a_valid_token_ready(world: World) -> None:
    await issued(world)
    world.edit(secretTemplate={"labels": {"team": "a"}})
    world.kube.write_faults.append(KubeError("replacing Secret logistics/fleet-api", 413, "too large"))
    await world.run()

    condition = world.status()["conditions"][0]
    assert (condition["status"], condition["reason"]) == ("True", "InvalidSpec")
    assert "the current token stays valid" in condition["message"]


# -- restores back off per Secret ---------------------------------------------------------------


def test_restore_delays_double_from_a_second_to_five_minutes() -> None:
    delays = [restore_delay(n) for n in range(12)]
    assert delays[:4] == [0.0, 1.0, 2.0, 4.0]
    assert delays[-1] == RESTORE_BACKOFF_CAP_SECONDS
    assert all(a <= b for a, b in itertools.pairwise(delays))


async def test_a_secret_deleted_again_and_again_is_restored_with_backoff(world: World) -> None:
    token = await issued(world)
    writes_after_issue = len(world.kube.secret_writes)

    world.kube.remove_secret(NS, "fleet-api")
    await world.run()
    assert world.token() == token, "the first restore is immediate"

    restores = [world.clock.now]
    for _ in range(8):  # the tenant deletes it again at once, each time
        world.kube.remove_secret(NS, "fleet-api")
        wake_at = await world.run()
        assert (NS, "fleet-api") not in world.kube.secrets, "not restored before its backoff"
        assert wake_at is not None
        assert world.ready()[1] == "SecretMissing"
        world.clock.now = wake_at
        await world.run()
        assert world.token() == token
        restores.append(world.clock.now)

    gaps = [round(b - a, 3) for a, b in itertools.pairwise(restores)]
    assert gaps == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]
    assert len(world.kube.secret_writes) == writes_after_issue + 9
    assert world.fake_auth.count() == 1, "restores use the token the operator holds"


async def test_restores_start_afresh_after_the_secret_was_left_alone(world: World) -> None:
    await issued(world)
    for _ in range(3):
        world.kube.remove_secret(NS, "fleet-api")
        wake_at = await world.run()
        world.clock.now = wake_at or world.clock.now
        await world.run()
    world.clock.advance(601)
    world.kube.remove_secret(NS, "fleet-api")
    await world.run()
    assert (NS, "fleet-api") in world.kube.secrets


async def test_edited_labels_are_restored_with_backoff_and_ready_stays_true(world: World) -> None:
    await issued(world)
    for expected_present in (True, False):
        secret = world.kube.secrets[(NS, "fleet-api")]
        labels = {**secret["metadata"]["labels"], "app.kubernetes.io/managed-by": "someone"}
        world.kube.put_secret(NS, {**secret, "metadata": {**secret["metadata"], "labels": labels}})
        await world.run()
        restored = world.kube.secrets[(NS, "fleet-api")]["metadata"]["labels"]["app.kubernetes.io/managed-by"]
        assert (restored == "simacan-token-operator") is expected_present
    assert world.ready() == ("True", "SecretModified")


def test_secret_data_bytes_are_counted_not_characters() -> None:
    template = {"k": "€" * 4096}  # 3 bytes each in UTF-8
    assert rendered_size_bound(template) >= 3 * 4096
    assert base64.b64decode(b64("€")) == "€".encode()


# -- one namespace cannot take every Kubernetes slot ----------------------------------------------


async def test_a_namespace_stuck_in_kubernetes_calls_leaves_slots_for_its_neighbours(world: World) -> None:
    """More passes of one namespace than the gate has slots hang in Kubernetes calls; a
    credential in another namespace still gets its token."""
    assert world.runtime is not None
    stuck = asyncio.Event()
    reads = world.kube.read_secret

    async def read_secret(namespace: str, name: str) -> dict[str, Any] | None:
        if namespace == "tenant":
            await stuck.wait()
        return await reads(namespace, name)

    world.kube.read_secret = read_secret  # type: ignore[method-assign]
    tenant = [f"c{i}" for i in range(KUBE_CONCURRENCY + 4)]
    for name in tenant:  # a login Secret each: one shared Secret is read once for all (known.Logins)
        world.login_secret(f"login-{name}", namespace="tenant")
        world.credential(name, namespace="tenant", credentialsSecretRef={"name": f"login-{name}"})
    passes = [asyncio.create_task(world.run(name, "tenant")) for name in tenant]
    try:
        await asyncio.sleep(0.1)
        assert not any(task.done() for task in passes)
        assert world.runtime.gates.shared.free == KUBE_CONCURRENCY - NAMESPACE_CONCURRENCY

        await asyncio.wait_for(issued(world), timeout=5)
    finally:
        stuck.set()
        await asyncio.gather(*passes, return_exceptions=True)
    assert len(world.runtime.gates.namespaces) == 0, "no gate is kept for a namespace without work"
