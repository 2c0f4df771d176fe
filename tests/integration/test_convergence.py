"""Three active operators on one credential (no leader election, as a misconfigured install has
them): they converge instead of fighting over the Secret.

Each adopts a valid token another one wrote instead of insisting on its own copy, so in steady
state each makes at most 2 Secret writes and 1 Auth API call per token (per refresh cycle: a
token is replaced two thirds into its lifetime), and no Events.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import jwt
from kubernetes import watch

from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import GROUP, PLURAL, VERSION, Namespace
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually
from tests.conftest import SUMMARY, Issue

LIFETIME = 6.0
OPERATORS = 3
LIFETIMES_MEASURED = 3


class Writes:
    """Counts every write to one object through a watch, as an outside observer would."""

    def __init__(self, list_call: Callable[..., Any], *args: Any, name: str) -> None:
        self.count = 0
        self._list, self._args, self._name = list_call, args, name
        self._stop = threading.Event()
        listed = list_call(*args, field_selector=f"metadata.name={name}", _preload_content=False)
        self._version = json.loads(listed.data)["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                self._list,
                *self._args,
                field_selector=f"metadata.name={self._name}",
                resource_version=self._version,
                timeout_seconds=2,
            )
            for event in stream:
                obj = event["object"]
                meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata.to_dict()
                self._version = meta.get("resource_version") or meta.get("resourceVersion")
                if event["type"] == "MODIFIED" and not self._stop.is_set():
                    self.count += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def event_count(ns: Namespace) -> int:
    """Repeated Events are aggregated into one object's count, as client-go's recorder does."""
    return sum(int(event.get("count") or 1) for event in ns.events("fleet-api"))


def test_three_active_operators_converge(
    ns: Namespace, fake_auth: FakeAuthAPI, issue: Issue, start_operator: Callable[..., OperatorProcess]
) -> None:
    fake_auth.access_lifetime = LIFETIME
    issue()
    for _ in range(OPERATORS - 1):
        start_operator()
    time.sleep(LIFETIME)  # let the three settle: the window below is the steady state

    events_before = event_count(ns)
    calls_before = fake_auth.count()
    writes = Writes(ns.core.list_namespaced_secret, ns.name, name="fleet-api")
    status_writes = Writes(
        ns.custom.list_namespaced_custom_object, GROUP, VERSION, ns.name, PLURAL, name="fleet-api"
    )
    expired_seen = 0
    tokens_seen: set[str] = set()
    deadline = time.monotonic() + LIFETIME * LIFETIMES_MEASURED
    while time.monotonic() < deadline:
        token = ns.secret_text("fleet-api", "token")
        assert token, "the Secret always holds a token"
        tokens_seen.add(token)
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        expired_seen += int(exp <= time.time())
        time.sleep(0.25)
    writes.stop()
    status_writes.stop()
    secret_writes = writes.count
    calls = fake_auth.count() - calls_before
    events = event_count(ns) - events_before

    # The window cuts one token short at each end: count the tokens seen plus one.
    cycles = len(tokens_seen) + 1
    SUMMARY.append(
        f"convergence: {OPERATORS} operators, {LIFETIME * LIFETIMES_MEASURED:.0f}s "
        f"({len(tokens_seen)} tokens "
        f"of {LIFETIME:.0f}s): {secret_writes} Secret writes, {status_writes.count} status writes, "
        f"{calls} Auth API calls, {events} Events"
    )
    assert expired_seen == 0, "a reader never saw an expired token"
    assert secret_writes <= 2 * OPERATORS * cycles
    assert status_writes.count <= 2 * OPERATORS * cycles
    assert calls <= OPERATORS * cycles
    assert events == 0
    eventually(lambda: ns.ready_reason("fleet-api") == ("True", "TokenValid"), what="Ready")
