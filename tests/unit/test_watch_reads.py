"""Reads served by the Secret watch, in process: a refresh reads no Secret the watch vouches for,
someone else's change is still read and undone, a password change is still picked up, and after
a gap in the watch only what its list shows changed is read again.

The Cluster harness of test_controller.py; the dict-backed Kubernetes logs every Secret change,
which `deliver` hands to the controller as the metadata-only Secret watch would."""

from __future__ import annotations

import base64
import gc
import json
import weakref
from typing import Any

from localenv.fakeauth import FakeAuthAPI
from simacan_token_operator.controller.known import pack, unpack
from simacan_token_operator.model.spec import API_VERSION, KIND
from simacan_token_operator.reconcile.tokensecret import (
    ACCOUNT_ANNOTATION,
    EXPIRES_AT_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    REFRESHED_AT_ANNOTATION,
)
from tests.unit.conftest import PASSWORD, USERNAME, FakeClock
from tests.unit.test_controller import Cluster, cluster, until
from tests.unit.test_reconcile_pass import clock, fake_auth

HARNESS = (fake_auth, clock, cluster)
"""The fixtures this module uses, defined with the harness."""
NS = "team-a"


def deliver(cluster: Cluster) -> int:
    """Hand every Secret change since the last call to the controller; how many there were."""
    assert cluster.controller is not None
    events = cluster.kube.watch_events()
    for namespace, name, version in events:
        cluster.controller.secret_changed(namespace, name, version)
    return len(events)


def reads(cluster: Cluster, name: str | None = None) -> int:
    return sum(1 for read in cluster.kube.secret_reads if name is None or read == (NS, name))


async def serve(cluster: Cluster, *names: str) -> list[dict[str, Any]]:
    """The watch has listed; credentials in NS sharing one login; every token Secret written and
    its write's echo delivered."""
    controller = cluster.controller
    assert controller is not None
    controller.secrets_listed(None, cluster.kube.secret_versions(), after_break=False)
    cluster.login_secret(NS)
    bodies = [cluster.credential(NS, name) for name in names]
    for body in bodies:
        await controller.observe(cluster.with_status(body))
    await until(lambda: all(cluster.token(NS, n) for n in names), "every token Secret written")
    await until(lambda: all((NS, n) in cluster.kube.statuses for n in names), "every status written")
    deliver(cluster)
    await settled(cluster)
    return bodies


async def settled(cluster: Cluster) -> None:
    """Until no worker has a round pending (woken, or due by the fake clock)."""
    assert cluster.controller is not None
    workers = cluster.controller.workers.values()
    await until(lambda: not any(w._wake.is_set() for w in workers), "the workers idle")


async def refresh_all(cluster: Cluster, clock: FakeClock, names: tuple[str, ...]) -> None:
    """Move the clock past every refresh time and let the workers run their due rounds."""
    assert cluster.controller is not None
    tokens = {n: cluster.token(NS, n) for n in names}
    writes = len(cluster.kube.secret_writes)
    clock.advance(3600)
    cluster.controller.resync()  # what their timers would do
    await until(lambda: all(cluster.token(NS, n) != tokens[n] for n in names), "every token refreshed")
    await until(lambda: len(cluster.kube.secret_writes) == writes + len(names), "one write each")


async def test_a_refresh_reads_no_secret_the_watch_vouches_for(cluster: Cluster, clock: FakeClock) -> None:
    names = ("one", "two", "three")
    await serve(cluster, *names)
    before = reads(cluster)

    await refresh_all(cluster, clock, names)
    assert deliver(cluster) == len(names), "the echo of each write"
    await settled(cluster)
    await refresh_all(cluster, clock, names)
    deliver(cluster)
    await settled(cluster)

    assert reads(cluster) == before, "neither token Secrets nor the login Secret were read again"
    assert len(cluster.kube.secret_writes) == 3 * len(names), "a create and two refreshes each"


async def test_without_a_listed_watch_every_pass_reads(cluster: Cluster, clock: FakeClock) -> None:
    """Nothing is trusted before the watch has listed its scope: it may not be watching at all."""
    assert cluster.controller is not None
    cluster.login_secret(NS)
    await cluster.controller.observe(cluster.with_status(cluster.credential(NS, "one")))
    await until(lambda: (NS, "one") in cluster.kube.statuses, "served")
    deliver(cluster)
    before = reads(cluster, "one")

    await refresh_all(cluster, clock, ("one",))

    assert reads(cluster, "one") > before, "the refresh read the Secret"


async def test_someone_elses_edit_or_deletion_is_read_and_undone(cluster: Cluster) -> None:
    await serve(cluster, "one", "two")
    ours = cluster.token(NS, "one")
    edited = cluster.kube.secrets[(NS, "one")]
    cluster.kube.put_secret(
        NS, {**edited, "data": {**edited["data"], "token": base64.b64encode(b"x").decode()}}
    )
    before, writes = reads(cluster, "one"), len(cluster.kube.secret_writes)

    deliver(cluster)
    await until(lambda: cluster.token(NS, "one") == ours, "the edit undone")
    assert reads(cluster, "one") == before + 1, "the edited Secret is read once"
    assert cluster.kube.secret_writes[writes:] == [("replace", "one")]

    deliver(cluster)  # the restore's own echo
    await settled(cluster)
    cluster.kube.remove_secret(NS, "two")
    deliver(cluster)
    await until(lambda: cluster.token(NS, "two") is not None, "the deleted Secret restored")
    assert cluster.kube.secret_writes[writes:] == [("replace", "one"), ("create", "two")]
    assert reads(cluster, "two") == 0, "never read: the watch's list and its deletion say it is not there"


async def test_the_echo_of_our_own_write_wakes_no_pass(cluster: Cluster, clock: FakeClock) -> None:
    await serve(cluster, "one")
    await refresh_all(cluster, clock, ("one",))
    await settled(cluster)
    controller = cluster.controller
    assert controller is not None
    worker = next(iter(controller.workers.values()))

    deliver(cluster)

    assert not worker._wake.is_set(), "our own version is no news"
    controller.secret_changed(NS, "one", None)  # an event of unknown version is
    assert worker._wake.is_set()


async def test_a_password_change_is_read_once_for_every_credential_using_it(
    cluster: Cluster, fake_auth: FakeAuthAPI
) -> None:
    names = ("one", "two", "three")
    await serve(cluster, *names)
    assert reads(cluster, "login") == 1, "one read of the shared login Secret at the start"
    logins = fake_auth.count("password")

    fake_auth.set_password(USERNAME, "a-new-password")
    data = {"username": base64.b64encode(USERNAME.encode()).decode()}
    data["password"] = base64.b64encode(b"a-new-password").decode()
    cluster.kube.put_secret(NS, {"metadata": {"name": "login"}, "data": data})
    tokens = {n: cluster.token(NS, n) for n in names}
    deliver(cluster)

    await until(lambda: all(cluster.token(NS, n) != tokens[n] for n in names), "new tokens everywhere")
    assert fake_auth.count("password") == logins + 1, "one login with the new password, for all"
    assert reads(cluster, "login") == 2, "the new version is read once, whatever the number of credentials"
    assert PASSWORD != "a-new-password"


async def test_after_a_watch_gap_only_what_the_list_shows_changed_is_read(cluster: Cluster) -> None:
    names = tuple(f"cred-{i}" for i in range(10))
    await serve(cluster, *names)
    assert cluster.controller is not None
    before, writes = reads(cluster), len(cluster.kube.secret_writes)
    cluster.kube.remove_secret(NS, "cred-3")  # during the gap: the watch never reports it
    cluster.kube.watch_events()

    cluster.controller.secrets_listed(None, cluster.kube.secret_versions(), after_break=True)

    await until(lambda: cluster.token(NS, "cred-3") is not None, "the Secret deleted during the gap restored")
    await settled(cluster)
    assert cluster.kube.secret_reads[before:] == [], "nothing read: the list shows what changed, a deletion"
    assert cluster.kube.secret_writes[writes:] == [("create", "cred-3")]


async def test_a_first_sync_creates_the_secrets_the_watch_listed_as_absent_without_reading_them(
    cluster: Cluster,
) -> None:
    names = ("one", "two", "three")
    await serve(cluster, *names)

    assert [read for read in cluster.kube.secret_reads if read[1] in names] == []
    assert sorted(cluster.kube.secret_writes) == [("create", n) for n in sorted(names)]


async def test_a_taken_name_the_watch_listed_is_read_and_costs_no_login(
    cluster: Cluster, fake_auth: FakeAuthAPI
) -> None:
    assert cluster.controller is not None
    theirs = cluster.kube.put_secret(NS, {"metadata": {"name": "api"}, "data": {"token": "dGhlaXJz"}})
    await serve(cluster, "one")
    logins = fake_auth.count()

    await cluster.controller.observe(cluster.with_status(cluster.credential(NS, "api")))

    await until(lambda: (NS, "api") in cluster.kube.statuses, "api reported")
    assert cluster.kube.statuses[(NS, "api")]["conditions"][0]["reason"] == "SecretConflict"
    assert reads(cluster, "api") == 1 and fake_auth.count() == logins
    assert cluster.kube.secrets[(NS, "api")] == theirs


async def test_a_secret_made_after_the_list_and_not_yet_reported_is_read_in_the_same_pass(
    cluster: Cluster,
) -> None:
    """Presumed absent, the create finds it there (409): the pass reads it and decides again, so
    the conflict is reported at once and the Secret is left alone."""
    assert cluster.controller is not None
    await serve(cluster, "one")
    theirs = cluster.kube.put_secret(NS, {"metadata": {"name": "api"}, "data": {"token": "dGhlaXJz"}})
    # not delivered: the watch has not reported it yet

    await cluster.controller.observe(cluster.with_status(cluster.credential(NS, "api")))

    await until(lambda: (NS, "api") in cluster.kube.statuses, "api reported")
    assert cluster.kube.statuses[(NS, "api")]["conditions"][0]["reason"] == "SecretConflict"
    assert reads(cluster, "api") == 1, "read once, after the create's 409"
    assert cluster.kube.secrets[(NS, "api")] == theirs
    assert ("create", "api") not in cluster.kube.secret_writes


def test_kept_metadata_round_trips_and_packs_to_under_half() -> None:
    """Thousands of targets each keep their token Secret's metadata: packed, it costs less than
    half its JSON (controller/known.py METADATA_DICTIONARY), and unpacks to what was kept."""
    meta = {
        "name": "orders-api-token",
        "namespace": NS,
        "uid": "3f1c2b4e-1111-4a6b-9c1d-2e3f4a5b6c7d",
        "resourceVersion": "123456",
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, "team": "orders"},
        "annotations": {
            EXPIRES_AT_ANNOTATION: "2026-12-06T09:36:13.123Z",
            REFRESHED_AT_ANNOTATION: "2026-12-06T08:36:13.123Z",
            ACCOUNT_ANNOTATION: "https://auth-service.services.simacan.com/api/v1 as api-user",
        },
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": "orders-api",
                "uid": "9f1c2b4e-1111-4a6b-9c1d-2e3f4a5b6c7d",
                "controller": True,
            }
        ],
    }
    text = json.dumps(meta, separators=(",", ":")).encode()
    packed = pack(text)
    assert unpack(packed) == meta
    assert len(packed) < len(text) / 2, (len(packed), len(text))


class Spec(dict[str, Any]):
    """A spec that a weak reference can follow."""


async def test_the_echo_of_a_status_patch_keeps_the_snapshot_and_lets_the_events_spec_go(
    cluster: Cluster,
) -> None:
    """Every status patch comes back as a watch event with the whole object: the worker keeps
    what it had, so the event's spec is not kept per credential, among the garbage of a wave."""
    [body] = await serve(cluster, "fleet-api")
    assert cluster.controller is not None
    worker = cluster.controller.workers[(KIND, NS, "fleet-api")]
    kept = worker.credential
    echo = cluster.with_status(body)
    echo["spec"] = Spec(echo["spec"])
    echo["metadata"]["resourceVersion"] = "999999"
    spec = weakref.ref(echo["spec"])

    await cluster.controller.observe(echo)
    del echo
    gc.collect()

    assert worker.credential is kept
    assert spec() is None, "the echo's spec outlived the event"
    assert not worker._wake.is_set(), "our own status, at a newer version, is no news"
