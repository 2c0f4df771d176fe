"""Status writes are fenced like Secret writes, in process (tests/unit/test_controller.py's harness).

Each status patch carries the resourceVersion of the last watch event or patch answer (the
FakeKube answers a stale one with 409, as the API server does); a 409 is retried once, after
the next watch event; a status someone else wrote is rewritten; the operator's own status, echoed
back by the watch, causes no write and no pass."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from simacan_token_operator.controller.reporting import StatusFence
from simacan_token_operator.model.schedule import RESTORE_QUIET_SECONDS
from simacan_token_operator.reconcile.status import token_fingerprint
from tests.unit.test_controller import Cluster, cluster, served, until
from tests.unit.test_reconcile_pass import clock, fake_auth

FIXTURES = (fake_auth, clock, cluster)
"""The in-process harness of tests/unit/test_controller.py, whose fixtures these tests use."""

REQUEST = "auth.simacan.com/refresh-requested-at"
FORGED = {
    "subject": "mallory",
    "conditions": [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Forged",
            "message": "written by someone else",
            "lastTransitionTime": "2020-01-01T00:00:00Z",
        }
    ],
}


async def settled(cluster: Cluster) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """served(), and every status complete: no write is still to come."""
    a, b, shared = await served(cluster)
    await until(
        lambda: all("staleConsumerCount" in status for status in cluster.kube.statuses.values()),
        "every status complete (the stale-consumer check reports after the first pass)",
    )
    return a, b, shared


def asked(body: dict[str, Any], value: str) -> dict[str, Any]:
    """The credential with a refresh request: the next pass writes a new token and status."""
    return {**body, "metadata": {**body["metadata"], "annotations": {REQUEST: value}}}


async def test_each_status_patch_carries_the_version_of_the_last_event_or_answer(cluster: Cluster) -> None:
    await settled(cluster)
    chained = 0
    for key in (("team-a", "api"), ("team-b", "api"), ("", "shared")):
        # The first status, then the stale-consumer check's (one, when the check reported first).
        patches = cluster.kube.patches_of(*key)
        assert patches, f"{key}: no status written"
        assert all(code == 200 for _, code, _ in patches), patches
        # Every patch after the first carries the version the previous patch's answer gave:
        # no read of the credential between two status writes.
        for (_, _, after), (sent, _, _) in itertools.pairwise(patches):
            assert sent == after, patches
            chained += 1
    assert chained, "some credential wrote its status twice: the chain of versions was checked"
    assert cluster.kube.status_conflicts == 0


async def test_a_conflict_is_retried_once_after_the_next_watch_event(cluster: Cluster) -> None:
    a, _, shared = await settled(cluster)
    controller = cluster.controller
    assert controller is not None
    for body, key in ((a, ("team-a", "api")), (shared, ("", "shared"))):
        before = len(cluster.kube.patches_of(*key))
        event = cluster.with_status(asked(body, f"2026-12-06T10:00:0{before}Z"))
        cluster.kube.edited(*key)  # someone labels it meanwhile: the watch has not told us yet
        await controller.observe(event)
        await until(lambda: len(cluster.kube.patches_of(*key)) > before, f"{key}: a status patch")  # noqa: B023
        await asyncio.sleep(0.2)  # room for a retry loop, which must not happen
        patches = cluster.kube.patches_of(*key)[before:]
        assert patches == [(event["metadata"]["resourceVersion"], 409, "")], "one refused patch, no retry yet"

        newer = cluster.with_status(asked(body, f"2026-12-06T10:00:0{before}Z"))
        await controller.observe(newer)  # the event the 409 waited for
        await until(lambda: len(cluster.kube.patches_of(*key)) > before + 1, f"{key}: the retry")  # noqa: B023
        await asyncio.sleep(0.2)
        patches = cluster.kube.patches_of(*key)[before:]
        assert [(sent, code) for sent, code, _ in patches] == [
            (event["metadata"]["resourceVersion"], 409),
            (newer["metadata"]["resourceVersion"], 200),
        ], "exactly one retry, with the new version"
        status = cluster.kube.statuses[key]
        assert status["lastRefreshRequest"] == f"2026-12-06T10:00:0{before}Z", "the status the retry wrote"
    assert cluster.token("team-a", "api")
    fingerprint = cluster.kube.statuses[("team-a", "api")]["tokenFingerprint"]
    assert fingerprint == token_fingerprint(cluster.token("team-a", "api") or "")


async def test_a_status_written_by_someone_else_is_rewritten_once(cluster: Cluster) -> None:
    a, _, shared = await settled(cluster)
    controller = cluster.controller
    assert controller is not None
    for body, key in ((a, ("team-a", "api")), (shared, ("", "shared"))):
        before = len(cluster.kube.patches_of(*key))
        written = dict(cluster.kube.statuses[key])
        forged = {**FORGED, "tokenFingerprint": "000000000000"} if key[0] else FORGED  # fields it owns
        cluster.kube.put_status(*key, forged)  # kubectl patch --subresource=status, or a late leader
        await controller.observe(cluster.with_status(body))
        await until(lambda: len(cluster.kube.patches_of(*key)) > before, f"{key}: corrected")  # noqa: B023
        for _ in range(3):  # the echo of the correction, delivered as often as a watch may
            await controller.observe(cluster.with_status(body))
        await asyncio.sleep(0.2)
        assert [code for _, code, _ in cluster.kube.patches_of(*key)[before:]] == [200], "one rewrite"
        assert cluster.kube.statuses[key] == written, "exactly the status the operator had written"
    assert cluster.kube.status_conflicts == 0
    assert cluster.fake_auth.count() == 1, "a status is corrected without a login"
    fingerprint = cluster.kube.statuses[("team-a", "api")]["tokenFingerprint"]
    assert fingerprint == token_fingerprint(cluster.token("team-a", "api") or "")


async def test_the_operators_own_status_echoed_by_the_watch_causes_no_write_and_no_pass(
    cluster: Cluster,
) -> None:
    a, b, shared = await settled(cluster)
    controller = cluster.controller
    assert controller is not None
    for body in (a, b, shared):  # a new token and status for each: three patches
        await controller.observe(cluster.with_status(asked(body, "2026-12-06T11:00:00Z")))
    statuses = cluster.kube.statuses.values()
    await until(
        lambda: all(s.get("lastRefreshRequest") == "2026-12-06T11:00:00Z" for s in statuses),
        "every status written",
    )
    await asyncio.sleep(0.2)  # the second round the token writes wake (survey, Secret) is done
    patches, reads = len(cluster.kube.status_requests), len(cluster.kube.secret_reads)

    for _ in range(5):  # the echoes, and repeats of them (a watch that restarts lists again)
        for body in (a, b, shared):
            await controller.observe(cluster.with_status(asked(body, "2026-12-06T11:00:00Z")))
    for body in (a, b, shared):  # a label edit: a new version, the status the operator wrote
        meta = body["metadata"]
        cluster.kube.edited(meta.get("namespace") or "", meta["name"])
        await controller.observe(cluster.with_status(asked(body, "2026-12-06T11:00:00Z")))
    await asyncio.sleep(0.2)

    assert len(cluster.kube.status_requests) == patches, "no status patch"
    assert len(cluster.kube.secret_reads) == reads, "no pass either: nothing read"
    assert cluster.kube.status_conflicts == 0


async def test_a_field_the_operator_does_not_write_is_left_alone_without_a_write_loop(
    cluster: Cluster,
) -> None:
    a, _, _ = await settled(cluster)
    controller = cluster.controller
    assert controller is not None
    before = len(cluster.kube.patches_of("team-a", "api"))
    cluster.kube.put_status("team-a", "api", {"note": "added by a user"})
    version = cluster.kube.credential_versions[("team-a", "api")]
    for _ in range(3):
        await controller.observe(cluster.with_status(a))
        await asyncio.sleep(0.1)

    patches = cluster.kube.patches_of("team-a", "api")[before:]
    assert len(patches) <= 1, "at most the one check that the owned fields are as written"
    assert cluster.kube.credential_versions[("team-a", "api")] == version, "and that changed nothing"
    assert cluster.kube.statuses[("team-a", "api")]["note"] == "added by a user"
    assert cluster.kube.statuses[("team-a", "api")]["conditions"][0]["reason"] == "TokenValid"


async def test_repeated_foreign_statuses_are_corrected_with_backoff(cluster: Cluster) -> None:
    """Another active writer that insists on a different status (two operators without leader
    election) meets a correction at once, then one after 1 s, 2 s, ...: never a write loop."""
    a, _, _ = await settled(cluster)
    controller = cluster.controller
    assert controller is not None
    key = ("team-a", "api")
    before = len(cluster.kube.patches_of(*key))
    for _ in range(5):
        cluster.kube.put_status(*key, FORGED)
        await controller.observe(cluster.with_status(a))
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    assert len(cluster.kube.patches_of(*key)) == before + 1, "the first correction only, for now"
    assert cluster.kube.statuses[key]["conditions"][0]["reason"] == "Forged"

    cluster.clock.advance(1.0)  # the second correction is due 1 s after the first
    controller.resync()
    await until(lambda: cluster.kube.statuses[key]["conditions"][0]["reason"] == "TokenValid", "corrected")
    assert len(cluster.kube.patches_of(*key)) == before + 2


def test_a_late_event_of_a_replaced_version_and_an_echo_before_the_answer_are_not_news() -> None:
    fence = StatusFence("5", {"a": 1})
    sent, mark = fence.sending()
    assert sent == "5"
    # The echo of our patch arrives before its answer does.
    assert fence.observed("6", {"a": 2}) is True
    fence.written(sent, mark, {"metadata": {"resourceVersion": "6"}, "status": {"a": 2}})
    assert fence.take(0.0) is None, "what the echo showed is what we wrote"
    assert fence.resource_version == "6"
    assert fence.observed("5", {"a": 1}) is False, "the version our patch replaced, delivered late"
    assert fence.observed("6", {"a": 2}) is False, "the echo again"
    assert fence.due(0.0) is None


def test_a_conflict_waits_for_a_newer_event_unless_one_came_while_it_was_in_flight() -> None:
    fence = StatusFence("5", {"a": 1})
    _, mark = fence.sending()
    assert fence.conflict(mark) is False and fence.conflicted
    assert fence.due(0.0) is None, "nothing to do until the watch says more"
    assert fence.observed("7", {"a": 1}) is True
    assert not fence.conflicted and fence.due(3.0) == 3.0
    assert fence.take(3.0) is not None and fence.due(3.0) is None

    _, mark = fence.sending()
    assert fence.observed("8", {"a": 1}) is False  # a label edit while the patch was in flight
    assert fence.conflict(mark) is True and not fence.conflicted, "retried at once with version 8"
    assert fence.resource_version == "8"


def test_corrections_back_off_and_start_afresh_after_a_quiet_spell() -> None:
    fence = StatusFence("1", {"a": 1})
    assert fence.observed("2", {"a": "forged"}) and fence.take(100.0) is not None
    assert fence.observed("3", {"a": "forged again"})
    assert fence.take(100.5) is None and fence.due(100.5) == 101.0
    assert fence.take(101.0) is not None
    assert fence.observed("4", {"a": "and again"}) and fence.due(101.0) == 103.0
    assert fence.take(101.0 + RESTORE_QUIET_SECONDS) is not None, "due long since"
    assert fence.observed("5", {"a": "much later"})
    assert fence.due(101.0 + RESTORE_QUIET_SECONDS) == 102.0 + RESTORE_QUIET_SECONDS
