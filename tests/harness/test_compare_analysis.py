"""The comparison benchmark's arithmetic: what counts as holding an expired token, and for how long; and
what counts as a request and as a Secret write in kube-apiserver's counters."""

from __future__ import annotations

import pytest

from localenv.apiserver_requests import (
    from_json,
    increase,
    parse_request_counts,
    per_write_rows,
    secret_gets,
    secret_writes,
    to_json,
)
from localenv.exposure import Sighting, analyse, first_sync_rate

START = 1_000.0


def test_a_token_replaced_before_expiry_is_never_expired() -> None:
    seen = [Sighting("a", START + 1, START + 60), Sighting("a", START + 41, START + 100)]
    exposure = analyse(seen, ["a"], START, START + 90)
    assert exposure.expired_seconds == 0
    assert exposure.worst_lateness == 0
    assert exposure.late_episodes == 0
    assert exposure.all_exist_after == 1
    assert exposure.held_seconds == 89


def test_the_first_sync_rate_leaves_out_the_start_up_and_the_stragglers() -> None:
    # 100 Secrets: the first after a 5 s start-up, then one every 0.01 s, the last one 30 s late
    first = [START + 5 + 0.01 * index for index in range(99)] + [START + 35.0]
    seen = [Sighting(f"s{index}", at, at + 60) for index, at in enumerate(first)]
    exposure = analyse(seen, [f"s{index}" for index in range(100)], START, START + 40)
    assert exposure.first_sync_rate == pytest.approx(100.0)
    assert exposure.all_exist_after == pytest.approx(35.0)
    assert first_sync_rate([START] * 9) is None, "too few to tell"
    assert first_sync_rate([START] * 20) is None, "all at one instant: no rate"


def test_a_late_replacement_counts_from_expiry_to_the_new_token() -> None:
    seen = [Sighting("a", START, START + 60), Sighting("a", START + 64.5, START + 124.5)]
    exposure = analyse(seen, ["a"], START, START + 100)
    assert exposure.expired_seconds == pytest.approx(4.5)
    assert exposure.worst_lateness == pytest.approx(4.5)
    assert exposure.late_episodes == 1
    assert exposure.expired_share == pytest.approx(4.5 / 100)


def test_a_token_still_expired_at_the_end_counts_until_the_end() -> None:
    exposure = analyse([Sighting("a", START, START + 10)], ["a"], START, START + 30)
    assert exposure.expired_seconds == 20
    assert exposure.worst_lateness == 20


def test_a_secret_never_written_means_not_all_exist_and_is_not_counted_as_expired() -> None:
    exposure = analyse([Sighting("a", START + 2, START + 60)], ["a", "b"], START, START + 30)
    assert exposure.all_exist_after is None
    assert exposure.existed == 1
    assert exposure.expired_seconds == 0
    assert exposure.timeline[0] == (0.0, 0, 2)
    assert exposure.timeline[5] == (5.0, 0, 1)


def test_the_timeline_counts_secrets_holding_an_expired_token_each_step() -> None:
    seen = [
        Sighting("a", START, START + 5),
        Sighting("b", START, START + 7),
        Sighting("a", START + 8, START + 20),
    ]
    exposure = analyse(seen, ["a", "b"], START, START + 10)
    expired = [point[1] for point in exposure.timeline]
    assert expired == [0, 0, 0, 0, 0, 1, 1, 2, 1, 1, 1]
    assert exposure.worst_lateness == 3  # b: expired at 7, never replaced by the end at 10
    assert exposure.expired_seconds == 3 + 3


def test_a_deleted_secret_is_missing_not_expired() -> None:
    seen = [Sighting("a", START, START + 60), Sighting("a", START + 10, None)]
    exposure = analyse(seen, ["a"], START, START + 100)
    assert exposure.expired_seconds == 0
    assert exposure.held_seconds == 10
    assert exposure.timeline[-1][2] == 1


# --- requests per Secret write, from kube-apiserver's apiserver_request_total -----------------------


def _sample(verb: str, resource: str, code: str, value: int, subresource: str = "") -> str:
    """One line of kube-apiserver's /metrics, labels as it prints them."""
    labels = (
        f'code="{code}",component="apiserver",dry_run="",group="",resource="{resource}",scope="resource",'
        f'subresource="{subresource}",verb="{verb}",version="v1"'
    )
    return f"apiserver_request_total{{{labels}}} {value}"


METRICS = "\n".join(
    [
        "# HELP apiserver_request_total [STABLE] Counter of apiserver requests broken out for each verb",
        "# TYPE apiserver_request_total counter",
        _sample("PUT", "secrets", "200", 40),
        _sample("POST", "secrets", "201", 10),
        _sample("APPLY", "secrets", "201", 3),
        _sample("PUT", "secrets", "409", 2),
        _sample("GET", "secrets", "200", 5),
        _sample("PATCH", "simacancredentials", "200", 50, subresource="status"),
        _sample("GET", "configmaps", "200", 900),
        _sample("LIST", "pods", "200", 7),
        'apiserver_request_counter_unrelated{code="200",resource="secrets",verb="GET"} 1000',
    ]
)


def test_the_counters_keep_the_resources_that_count_by_verb_resource_and_code() -> None:
    counts = parse_request_counts(METRICS)
    assert counts == {
        ("PUT", "secrets", "200"): 40,
        ("POST", "secrets", "201"): 10,
        ("APPLY", "secrets", "201"): 3,
        ("PUT", "secrets", "409"): 2,
        ("GET", "secrets", "200"): 5,
        ("PATCH", "simacancredentials/status", "200"): 50,
    }


def test_a_secret_write_is_a_2xx_post_put_patch_or_server_side_apply() -> None:
    counts = parse_request_counts(METRICS)
    assert secret_writes(counts) == 40 + 10 + 3  # not the 409, not the GET
    assert secret_gets(counts) == 5


def test_the_window_counts_only_what_grew() -> None:
    before = parse_request_counts(METRICS)
    after = before.copy()
    after[("PUT", "secrets", "200")] += 7
    after[("GET", "events", "200")] = 1  # first seen inside the window
    assert increase(before, after) == {("PUT", "secrets", "200"): 7, ("GET", "events", "200"): 1}


def test_requests_per_write_merge_2xx_codes_and_keep_the_others_apart() -> None:
    rows = per_write_rows(parse_request_counts(METRICS))
    writes = 53
    assert rows == {
        "APPLY secrets": pytest.approx(3 / writes),
        "GET secrets": pytest.approx(5 / writes),
        "PATCH simacancredentials/status": pytest.approx(50 / writes),
        "POST secrets": pytest.approx(10 / writes),
        "PUT secrets": pytest.approx(40 / writes),
        "PUT secrets 409": pytest.approx(2 / writes),
    }
    assert sum(rows.values()) == pytest.approx(110 / writes)


def test_counts_survive_the_results_file() -> None:
    counts = parse_request_counts(METRICS)
    assert from_json(to_json(counts)) == counts
