"""What a workload sees: a real kubelet mounts the token Secret while the operator rotates the token.

The promise is that a pod reading the mounted file never holds an expired token, kubelet's delay in
updating mounted Secrets included. A pod on the real node (localenv/node.py, kubelet syncFrequency 10 s)
reports every second which token it sees through a whole-Secret volume, a `subPath` mount and an
environment variable (localenv/token_reader.py). Tokens live 90 s and the operator keeps its default
margin (a refresh two thirds into the lifetime, 30 s before expiry), so the test spans one rotation
and runs past the first token's expiry.
"""

from __future__ import annotations

import base64
import datetime
import time
from dataclasses import dataclass
from typing import Any

import jwt

from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import Namespace
from localenv.node import Node
from localenv.polling import Timeout, eventually
from localenv.token_reader import CONTAINER, Reading, digest, pod_manifest, readings
from tests.conftest import SUMMARY, Issue

LIFETIME_SECONDS = 90
SECRET = "fleet-api"
REFRESHED_AT = "auth.simacan.com/refreshed-at"
POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Written:
    """One token as the operator wrote it into the Secret."""

    exp: int
    refreshed_at: float  # when the operator obtained it (annotation), just before writing it
    seen_at: float  # when this test first saw it in the Secret


def test_mounted_token_rotates_before_expiry_while_subpath_and_env_keep_the_first(
    node: Node, ns: Namespace, fake_auth: FakeAuthAPI, issue: Issue
) -> None:
    # Long enough for kubelet's delay under CI load, short enough to see a rotation and an expiry.
    fake_auth.access_lifetime = LIFETIME_SECONDS
    first = issue().token
    first_exp = _exp(first)
    written: dict[str, Written] = {}
    _record_secret(ns, written)
    ns.create_pod(pod_manifest("reader", SECRET, node.name))

    def log() -> list[Reading]:
        return readings(node.container_log(ns.name, "reader", CONTAINER))

    try:
        eventually(log, timeout=60, what="the reader pod's first line")
    except Timeout as error:
        status = ns.core.read_namespaced_pod("reader", ns.name).status
        log_file = node.work_dir / "node-logs" / "kubelet.log"
        raise AssertionError(f"{error}\npod status: {status}\nkubelet log: {log_file}") from error
    # Run until the workload's clock has passed the first token's expiry, recording every token written.
    deadline = time.monotonic() + first_exp - time.time() + 60
    while not any(reading.at > first_exp + 2 for reading in log()):
        assert time.monotonic() < deadline, f"reader stopped reporting; last lines: {log()[-3:]}"
        _record_secret(ns, written)
        time.sleep(POLL_SECONDS)
    seen = log()

    first_digest = digest(first)
    assert seen[0].mounted == first_digest, "the pod started with a token other than the first one"
    unknown = {reading.mounted for reading in seen} - set(written)
    assert not unknown, "the pod read a token the Secret never held"

    # The whole-Secret mount: every read is of a token that has not expired, and exp decodes in the pod.
    for reading in seen:
        assert reading.exp == written[reading.mounted].exp, f"pod decoded a wrong exp: {reading}"
        assert reading.at < reading.exp, f"pod read an expired token at {_utc(reading.at)}: {reading}"

    # It did so because kubelet replaced the file in time, and this is how long that took.
    rotated = next(reading for reading in seen if reading.mounted != first_digest)
    token = written[rotated.mounted]
    delay = rotated.at - token.refreshed_at
    margin = first_exp - token.refreshed_at
    assert delay < margin
    SUMMARY.append(
        f"e2e: kubelet (syncFrequency {node.sync_frequency}) showed a refreshed token in the mounted "
        f"Secret {delay:.1f}s after the operator obtained it ({margin:.1f}s before the old one expired)"
    )

    # subPath and env are resolved once, at container start: they still hold the first token, now expired.
    assert {reading.subpath for reading in seen} == {first_digest}
    assert {reading.env for reading in seen} == {first_digest}
    assert seen[-1].at > first_exp


def _record_secret(ns: Namespace, written: dict[str, Written]) -> None:
    secret = ns.secret(SECRET)
    if secret is None or "token" not in (secret.get("data") or {}):
        return
    token = base64.b64decode(secret["data"]["token"]).decode()
    if digest(token) in written:
        return
    annotations = secret["metadata"].get("annotations") or {}
    refreshed_at = datetime.datetime.fromisoformat(annotations[REFRESHED_AT].replace("Z", "+00:00"))
    written[digest(token)] = Written(_exp(token), refreshed_at.timestamp(), time.time())


def _exp(token: str) -> int:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return int(claims["exp"])


def _utc(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat()
