"""The stale-consumer check's verdicts and its per-namespace cache (workloads.py), over the dict-backed kube.

What is asserted is what bounds the operator's memory and requests whatever a tenant creates:
which workloads are read in full, how many pages are listed, and how many entries are kept.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from simacan_token_operator.controller.workloads import (
    PAGE_SIZE,
    WORKLOAD_LIST_TTL_SECONDS,
    NamespaceWorkloads,
)
from simacan_token_operator.kube.client import KubeError, decoded_keeping
from simacan_token_operator.reconcile import consumers
from simacan_token_operator.reconcile.consumers import Survey, Verdict
from tests.unit.conftest import FakeClock
from tests.unit.fakekube import FakeKube

NS = "logistics"
OTHER_NS = "planning"


def workload(name: str, *, env_from: str | None = None, **pod: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": "busybox"}
    if env_from:
        container["env"] = [{"name": "T", "valueFrom": {"secretKeyRef": {"name": env_from, "key": "token"}}}]
    return {"metadata": {"name": name}, "spec": {"template": {"spec": {"containers": [container], **pod}}}}


class Nudges:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, who: str) -> Any:
        return lambda: self.seen.append(who)


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def surveyed(cache: NamespaceWorkloads, namespace: str = NS, user: str = "fleet-api") -> Survey | None:
    """The survey a pass would see once the one it started is done."""
    cache.survey(namespace, user, lambda: None)
    await cache.settled()
    return cache.survey(namespace, user, lambda: None)


def stale_names(survey: Survey | None, secret: str = "fleet-api") -> tuple[str, ...]:
    assert survey is not None
    return consumers.stale(survey.verdicts, secret, ())


# -- the verdict on one workload -----------------------------------------------------------------


def test_verdict_names_only_the_secrets_read_at_start() -> None:
    body = {
        "metadata": {"name": "app", "annotations": {"big": "x" * 100_000}},
        "spec": {
            "template": {
                "spec": {
                    "initContainers": [
                        {
                            "name": "init",
                            "envFrom": [{"secretRef": {"name": "env-from"}}, {"configMapRef": {}}],
                        }
                    ],
                    "containers": [
                        {
                            "name": "app",
                            "env": [
                                {"name": "A", "value": "plain"},
                                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "key-ref", "key": "k"}}},
                                {
                                    "name": "C",
                                    "valueFrom": {"configMapKeyRef": {"name": "a-config", "key": "k"}},
                                },
                            ],
                            "volumeMounts": [
                                {"name": "whole", "mountPath": "/whole"},
                                {"name": "single", "mountPath": "/one", "subPath": "token"},
                                {"name": "projected", "mountPath": "/p", "subPathExpr": "$(POD)"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "whole", "secret": {"secretName": "whole-volume"}},
                        {"name": "single", "secret": {"secretName": "sub-path"}},
                        {
                            "name": "projected",
                            "projected": {
                                "sources": [
                                    {"secret": {"name": "projected-1"}},
                                    {"secret": {"name": "projected-2"}},
                                ]
                            },
                        },
                    ],
                }
            }
        },
    }
    assert consumers.verdict("Deployment", body) == Verdict(
        "Deployment", "app", frozenset({"env-from", "key-ref", "sub-path", "projected-1", "projected-2"})
    )


def test_a_workload_is_decoded_keeping_only_the_fields_the_verdict_uses() -> None:
    body = workload("app", env_from="fleet-api")
    body["metadata"].update(uid="u-1", generation=3, annotations={"a": "annotation-value" * 1000})
    body["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
    body["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "X", "value": "env-value" * 1000}
    )
    body["spec"]["template"]["spec"]["containers"][0]["command"] = ["sh", "-c", "a-command"]

    kept = decoded_keeping(
        json.dumps(body).encode(), consumers.TEMPLATE_FIELDS | {"metadata", "uid", "generation"}
    )

    text = json.dumps(kept)
    for dropped in ("annotation-value", "managedFields", "kubectl", "env-value", "a-command", "busybox"):
        assert dropped not in text
    assert kept["metadata"] == {"name": "app", "uid": "u-1", "generation": 3}
    assert consumers.verdict("Deployment", kept) == consumers.verdict("Deployment", body)


# -- the namespace cache: pages, full reads only of what is new or changed --------------------------


async def test_pages_are_listed_and_only_new_or_changed_workloads_are_read_in_full(
    kube: FakeKube, clock: FakeClock
) -> None:
    count = 2 * PAGE_SIZE + 5
    for i in range(count - 1):
        kube.put_workload(NS, "Deployment", workload(f"app-{i:02}"))
    kube.put_workload(NS, "Deployment", workload("zz-env-reader", env_from="fleet-api"))  # on the last page
    cache = NamespaceWorkloads(kube, clock)

    assert stale_names(await surveyed(cache)) == ("Deployment/zz-env-reader",)
    assert len(kube.full_reads) == count
    pages = [page for page in kube.workload_pages if page[1] == "Deployment"]
    assert pages == [(NS, "Deployment", PAGE_SIZE)] * 3

    clock.advance(WORKLOAD_LIST_TTL_SECONDS)
    kube.full_reads.clear()
    assert stale_names(await surveyed(cache)) == ("Deployment/zz-env-reader",)
    assert kube.full_reads == [], "an unchanged namespace is listed again but nothing is read in full"
    assert len(kube.workload_pages) == 2 * (3 + 2)

    # A changed spec (new generation) is read again and its verdict changes; so is a re-created one.
    kube.put_workload(NS, "Deployment", workload("app-03", env_from="fleet-api"))
    kube.put_workload(NS, "Deployment", workload("zz-env-reader"))
    kube.delete_workload(NS, "Deployment", "app-04")
    kube.put_workload(NS, "Deployment", workload("app-04", env_from="fleet-api"))  # a new uid
    kube.delete_workload(NS, "Deployment", "app-05")
    clock.advance(WORKLOAD_LIST_TTL_SECONDS)
    assert stale_names(await surveyed(cache)) == ("Deployment/app-03", "Deployment/app-04")
    assert sorted(kube.full_reads) == [(NS, "Deployment", n) for n in ("app-03", "app-04", "zz-env-reader")]
    assert cache.kept == count - 1 + 2, "one per workload (the deleted one is gone), one per Secret read"


async def test_credentials_of_a_namespace_share_one_survey_a_minute(kube: FakeKube, clock: FakeClock) -> None:
    kube.put_workload(NS, "Deployment", workload("env-reader", env_from="fleet-api"))
    cache = NamespaceWorkloads(kube, clock)
    nudges = Nudges()

    assert cache.survey(NS, "a", nudges("a")) is None, "no survey yet: a pass never waits for one"
    assert cache.survey(NS, "b", nudges("b")) is None
    await cache.settled()
    assert sorted(nudges.seen) == ["a", "b"], "a new survey wakes every credential of the namespace"
    assert len(kube.workload_pages) == 3, "one list per kind for both"

    clock.advance(WORKLOAD_LIST_TTL_SECONDS - 1)
    assert stale_names(cache.survey(NS, "a", nudges("a"))) == ("Deployment/env-reader",)
    await cache.settled()
    assert len(kube.workload_pages) == 3, "within the minute nothing is listed again"

    clock.advance(1)
    cache.survey(NS, "a", nudges("a"))
    await cache.settled()
    assert len(kube.workload_pages) == 6
    assert len(nudges.seen) == 2, "an unchanged survey wakes nobody"


async def test_the_namespace_is_forgotten_with_its_last_credential(kube: FakeKube, clock: FakeClock) -> None:
    kube.put_workload(NS, "Deployment", workload("env-reader", env_from="fleet-api"))
    kube.put_workload(OTHER_NS, "Deployment", workload("other"))
    cache = NamespaceWorkloads(kube, clock)
    await surveyed(cache, NS, "a")
    await surveyed(cache, NS, "b")
    await surveyed(cache, OTHER_NS, "c")
    assert cache.kept == 3

    cache.release(NS, "a")
    assert cache.kept == 3, "another credential still uses it"
    cache.release(NS, "b")
    assert cache.kept == 1

    kube.full_reads.clear()
    assert stale_names(await surveyed(cache, NS, "d")) == ("Deployment/env-reader",)
    assert kube.full_reads == [(NS, "Deployment", "env-reader")], "read afresh, nothing remembered"


async def test_over_the_namespace_cap_a_survey_is_partial_and_stops_growing(
    kube: FakeKube, clock: FakeClock
) -> None:
    cap = 30
    for i in range(cap + 5):
        kube.put_workload(NS, "Deployment", workload(f"app-{i:02}"))
    kube.put_workload(NS, "Deployment", workload("zz-env-reader", env_from="fleet-api"))
    kube.put_workload(OTHER_NS, "Deployment", workload("env-reader", env_from="fleet-api"))
    cache = NamespaceWorkloads(kube, clock, namespace_cap=cap)

    survey = await surveyed(cache)
    assert survey == Survey((), partial=True)
    assert cache.kept == cap and len(kube.full_reads) == cap
    assert len(kube.workload_pages) == cap // PAGE_SIZE + 1, "listing stops at the cap"

    clock.advance(WORKLOAD_LIST_TTL_SECONDS)
    kube.full_reads.clear()
    assert await surveyed(cache) == Survey((), partial=True)
    assert kube.full_reads == [] and cache.kept == cap, "never grows"

    other = await surveyed(cache, OTHER_NS, "other")
    assert other is not None and not other.partial, "the cap of one namespace is not the others'"
    assert stale_names(other) == ("Deployment/env-reader",)


async def test_a_workload_reading_more_secrets_than_the_cap_is_kept_as_one_entry(
    kube: FakeKube, clock: FakeClock
) -> None:
    body = workload("many")
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": f"E{i}", "valueFrom": {"secretKeyRef": {"name": f"s-{i}", "key": "k"}}} for i in range(50)
    ]
    kube.put_workload(NS, "Deployment", body)
    cache = NamespaceWorkloads(kube, clock, namespace_cap=20)

    assert await surveyed(cache) == Survey((), partial=True)
    assert cache.kept == 1
    clock.advance(WORKLOAD_LIST_TTL_SECONDS)
    await surveyed(cache)
    assert len(kube.full_reads) == 1, "not read again while its generation stays"


async def test_over_the_total_cap_surveys_are_partial(kube: FakeKube, clock: FakeClock) -> None:
    for namespace in ("ns-a", "ns-b", "ns-c"):
        for i in range(8):
            kube.put_workload(namespace, "Deployment", workload(f"app-{i}", env_from="fleet-api"))
    cache = NamespaceWorkloads(kube, clock, namespace_cap=100, total_cap=40)

    surveys = [await surveyed(cache, namespace) for namespace in ("ns-a", "ns-b", "ns-c")]
    assert [s is not None and s.partial for s in surveys] == [False, False, True]
    assert cache.kept <= 40
    assert surveys[2] is not None and len(surveys[2].verdicts) == (40 - 32) // 2


async def test_a_large_namespace_does_not_hold_up_the_others(kube: FakeKube, clock: FakeClock) -> None:
    for i in range(100):
        kube.put_workload("large", "Deployment", workload(f"app-{i:03}"))
    kube.put_workload("small", "Deployment", workload("app"))
    cache = NamespaceWorkloads(kube, clock)
    nudges = Nudges()

    cache.survey("large", "l", nudges("large"))
    cache.survey("small", "s", nudges("small"))
    await cache.settled()
    assert nudges.seen == ["small", "large"], "the small namespace's survey finishes during the large one's"


async def test_a_forbidden_namespace_has_the_check_off_logged_once(
    kube: FakeKube, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    kube.forbidden_namespaces.add(NS)
    kube.put_workload(OTHER_NS, "Deployment", workload("env-reader", env_from="fleet-api"))
    cache = NamespaceWorkloads(kube, clock)
    with caplog.at_level(logging.WARNING):
        assert await surveyed(cache) is None
        clock.advance(WORKLOAD_LIST_TTL_SECONDS)
        assert await surveyed(cache) is None
    assert len([r for r in caplog.records if "stale-consumer check is off" in r.message]) == 1
    assert stale_names(await surveyed(cache, OTHER_NS)) == ("Deployment/env-reader",)


async def test_a_failed_survey_keeps_the_last_one_and_is_tried_again_after_the_ttl(
    kube: FakeKube, clock: FakeClock
) -> None:
    kube.put_workload(NS, "Deployment", workload("env-reader", env_from="fleet-api"))
    cache = NamespaceWorkloads(kube, clock)
    first = await surveyed(cache)

    kube.list_faults.append(KubeError("listing Deployments", 500, "etcd timeout"))
    clock.advance(WORKLOAD_LIST_TTL_SECONDS)
    assert await surveyed(cache) == first
    pages = len(kube.workload_pages)
    await surveyed(cache)
    assert len(kube.workload_pages) == pages, "not retried at once"
    clock.advance(WORKLOAD_LIST_TTL_SECONDS)
    assert await surveyed(cache) == first
    assert len(kube.workload_pages) == pages + 3
