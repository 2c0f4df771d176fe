"""Refresh requests against the emulator and the stand-in Auth API, with the operator as a process
(issue 21, item 2): a burst of refresh-requested-at values costs one Auth API call, and the
newest value is shown as pending until its minute has passed. That it is then honoured takes a
minute of real time; tests/unit/test_refresh_requests.py shows it with a hand-moved clock."""

from __future__ import annotations

import time

from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import Namespace
from localenv.polling import eventually, stays
from tests.conftest import Issue

REQUESTED = "auth.simacan.com/refresh-requested-at"


def test_a_hundred_refresh_requests_cost_one_auth_call_and_the_last_one_waits(
    ns: Namespace, fake_auth: FakeAuthAPI, issue: Issue
) -> None:
    first = issue().token
    calls = fake_auth.count()

    def ask(value: str) -> None:
        ns.patch_credential("fleet-api", {"metadata": {"annotations": {REQUESTED: value}}})

    def status() -> dict[str, str]:
        return ns.credential("fleet-api").get("status") or {}

    started = time.monotonic()
    ask("request-00")
    eventually(lambda: ns.secret_text("fleet-api", "token") != first, timeout=5, what="the first request")
    eventually(lambda: status().get("lastRefreshRequest") == "request-00", timeout=5, what="recorded")
    for i in range(1, 100):
        ask(f"request-{i:02d}")
    eventually(lambda: status().get("pendingRefreshRequest") == "request-99", timeout=10, what="pending")
    assert time.monotonic() - started < 50, "the 100 values came within a minute"
    assert status()["lastRefreshRequest"] == "request-00"
    stays(lambda: fake_auth.count() == calls + 1, 3, what="one Auth API call for the whole burst")
    assert ns.ready_reason("fleet-api") == ("True", "TokenValid")
