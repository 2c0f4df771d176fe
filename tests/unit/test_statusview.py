"""`simacan-token-operator status` and the demo's view: what a person reads, from status and Events only."""

from __future__ import annotations

import io
import json
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from localenv.demoview import AuthCalls, Progress, render_plain, render_screen, verdict
from localenv.loopback import serving
from simacan_token_operator.app.cli import parse_args
from simacan_token_operator.app.statusview import (
    EXIT_ERROR,
    EXIT_NOT_READY,
    EXIT_READY,
    Snapshot,
    cluster_credential_view,
    cluster_events_of,
    command,
    credential_view,
    event_view,
    events_of,
    human_duration,
    printable,
    render_cluster_detail,
    render_detail,
    render_events,
    render_table,
    shown_for,
)
from simacan_token_operator.kube.client import RawApi
from simacan_token_operator.model.clusterspec import OWNER_LABEL
from simacan_token_operator.reconcile.tokensecret import rfc3339
from tests.unit.kubeapi import api_client_for, emulated_api

NOW = 1_800_000_000.0
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def credential(
    name: str = "fleet-api",
    *,
    ready: str | None = "True",
    reason: str = "TokenValid",
    message: str = "token valid",
    uid: str = "uid-1",
    generation: int = 1,
    observed: int = 1,
    fingerprint: str | None = "3fa2c1d9e0b7",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "logistics", "uid": uid, "generation": generation},
        "spec": {"credentialsSecretRef": {"name": "login"}},
    }
    if ready is not None:
        body["status"] = {
            "observedGeneration": observed,
            "secretName": name,
            "subject": "api-user@example.com",
            "expiresAt": rfc3339(NOW + 48),
            "refreshedAt": rfc3339(NOW - 12),
            "nextRefreshAt": rfc3339(NOW + 28),
            **({"tokenFingerprint": fingerprint} if fingerprint else {}),
            "conditions": [
                {"type": "Ready", "status": ready, "reason": reason, "message": message},
            ],
        }
    return body


def event(
    reason: str, *, name: str = "fleet-api", uid: str = "uid-1", age: float = 5, count: int = 1, **extra: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{name}.abc", "namespace": "logistics"},
        "involvedObject": {"kind": "SimacanCredential", "name": name, "namespace": "logistics", "uid": uid},
        "type": "Warning" if reason != "Issued" else "Normal",
        "reason": reason,
        "message": f"{reason} happened",
        "source": {"component": "simacan-token-operator"},
        "firstTimestamp": rfc3339(NOW - age - 60 * (count - 1)),
        "lastTimestamp": rfc3339(NOW - age),
        "count": count,
        **extra,
    }


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (45.9, "45s"), (60, "1m"), (192, "3m12s"), (7500, "2h5m"), (7200, "2h"), (273600, "3d4h")],
)
def test_durations_read_like_kubectl(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_detail_shows_ready_times_secret_fingerprint_and_events_like_cmctl() -> None:
    view = credential_view(credential())
    events = [event_view(event("Issued", age=12)), event_view(event("AuthUnavailable", age=3, count=4))]
    text = "\n".join(render_detail(view, events, NOW))
    assert "Ready:         True (TokenValid)" in text
    assert "Message:     token valid" in text
    assert "Token Secret:  fleet-api" in text
    assert "Fingerprint:   3fa2c1d9e0b7" in text
    assert f"Expires at:    {rfc3339(NOW + 48)} (in 48s)" in text
    assert f"Refreshed at:  {rfc3339(NOW - 12)} (12s ago)" in text
    assert "Next refresh:  " in text and "(in 28s)" in text
    assert "Events (last 2 of 2):" in text
    assert "AuthUnavailable" in text and "3s (x4 over 3m3s)" in text
    assert text.index("Issued") < text.index("AuthUnavailable"), "oldest Event first, as kubectl describe"


def test_a_credential_without_status_is_not_ready_and_says_why() -> None:
    view = credential_view(credential(ready=None))
    assert not view.is_ready
    text = "\n".join(render_detail(view, [], NOW))
    assert "Ready:         Unknown (NoStatus)" in text
    assert "is it running?" in text
    assert "Events:        none" in text


def test_a_status_behind_the_spec_is_called_stale() -> None:
    text = "\n".join(render_detail(credential_view(credential(generation=3, observed=2)), [], NOW))
    assert "status describes generation 2, the spec is at 3" in text


def test_only_the_credentials_own_events_by_uid_not_a_deleted_namesakes() -> None:
    view = credential_view(credential(uid="new"))
    events = [
        event_view(event("Issued", uid="old")),
        event_view(event("Issued", uid="new", age=1)),
        event_view(event("Issued", name="orders-api", uid="other")),
    ]
    mine = events_of(view, events)
    assert [e.object_uid for e in mine] == ["new"]


def test_table_has_one_row_per_credential_with_expiry_next_refresh_and_fingerprint() -> None:
    views = [credential_view(credential()), credential_view(credential("orders-api", ready="False"))]
    header, *rows = render_table(views, NOW)
    assert header.split() == [
        "NAME",
        "READY",
        "REASON",
        "EXPIRES",
        "IN",
        "NEXT",
        "REFRESH",
        "FINGERPRINT",
        "SECRET",
    ]
    assert rows[0].split() == [
        "fleet-api",
        "True",
        "TokenValid",
        "48s",
        "in",
        "28s",
        "3fa2c1d9e0b7",
        "fleet-api",
    ]
    assert rows[1].split()[:2] == ["orders-api", "False"]
    assert rows[0].index("TokenValid") == header.index("REASON"), "columns line up under the header"


def test_expired_tokens_and_overdue_refreshes_say_so() -> None:
    body = credential()
    body["status"]["expiresAt"] = rfc3339(NOW - 30)
    body["status"]["nextRefreshAt"] = rfc3339(NOW - 90)
    row = render_table([credential_view(body)], NOW)[1]
    assert "expired 30s ago" in row
    assert "due 1m30s ago" in row


def test_events_without_last_timestamp_fall_back_to_event_time() -> None:
    raw = event("Issued")
    del raw["firstTimestamp"], raw["lastTimestamp"]
    raw["eventTime"] = "2027-01-15T08:00:00.000000Z"
    assert event_view(raw).last_seen is not None
    assert "Issued" in render_events([event_view(raw)], NOW)[1]


class _Client:
    """Stands in for an ApiClient only in what `command` does with it before fetch fails or returns."""

    def close(self) -> None:
        pass


def test_name_with_all_namespaces_is_a_usage_error() -> None:
    err = io.StringIO()
    assert command(_Client, None, True, "fleet-api", out=io.StringIO(), err=err) == EXIT_ERROR
    assert "NAME" in err.getvalue()


def test_no_cluster_to_talk_to_is_an_error_not_a_traceback() -> None:
    def no_kubeconfig() -> Any:
        raise RuntimeError("Invalid kube-config file. No configuration found.")

    err = io.StringIO()
    assert command(no_kubeconfig, "logistics", False, None, out=io.StringIO(), err=err) == EXIT_ERROR
    assert "no cluster to talk to" in err.getvalue()


# --- the demo's view uses the same rendering ------------------------------------------------------------


def snapshot(*bodies: dict[str, Any], events: tuple[dict[str, Any], ...] = ()) -> Snapshot:
    return Snapshot([credential_view(b) for b in bodies], [event_view(e) for e in events])


def test_demo_screen_shows_the_status_table_calls_and_recent_events() -> None:
    shot = snapshot(credential(), events=(event("Issued"),))
    screen = "\n".join(render_screen(["HEADER"], shot, AuthCalls(1, 2, 0), ["FOOTER"], NOW))
    for line in render_table(shot.credentials, NOW):
        assert line in screen
    assert "Auth API calls so far: 3 (1 password login, 2 refreshes; 0 failed)" in screen
    assert "Issued" in screen and "fleet-api" in screen
    assert screen.startswith("HEADER") and screen.endswith("FOOTER")


def test_demo_plain_lines_carry_the_time_since_the_operator_started() -> None:
    lines = render_plain(75, snapshot(credential()), AuthCalls(1, 0, 0), [], NOW)
    assert lines[0].startswith("[t+ 1m15s] fleet-api")
    assert "3fa2c1d9e0b7" in lines[0]


def test_a_new_fingerprint_counts_as_a_refresh_and_the_verdict_needs_one() -> None:
    progress = Progress()
    first = [credential_view(credential(fingerprint="aaaaaaaaaaaa"))]
    progress.observe(first, NOW)
    progress.observe(first, NOW + 1)
    assert progress.first_token_at == NOW
    assert verdict(progress, first) == (False, "no refresh happened")
    later = [credential_view(credential(fingerprint="bbbbbbbbbbbb"))]
    progress.observe(later, NOW + 40)
    ok, summary = verdict(progress, later)
    assert ok, summary
    assert progress.refreshes == 1


def test_the_verdict_fails_for_a_credential_that_never_got_a_token_or_is_not_ready() -> None:
    progress = Progress()
    views = [
        credential_view(credential(fingerprint="aaaaaaaaaaaa")),
        credential_view(credential("orders-api", ready="False", reason="SecretConflict", fingerprint=None)),
    ]
    progress.observe(views, NOW)
    progress.observe([credential_view(credential(fingerprint="bbbbbbbbbbbb"))], NOW + 40)
    ok, summary = verdict(progress, views)
    assert not ok
    assert "no token for orders-api" in summary
    assert "orders-api (False, SecretConflict)" in summary
    assert verdict(Progress(), []) == (False, "no SimacanCredentials found")


def test_events_are_printed_once_and_again_when_their_count_grows() -> None:
    progress = Progress()
    once = [event_view(event("AuthUnavailable", count=1))]
    assert len(progress.new_events(once)) == 1
    assert progress.new_events(once) == []
    assert len(progress.new_events([event_view(event("AuthUnavailable", count=2))])) == 1


def test_nothing_rendered_ever_contains_a_token() -> None:
    body = credential()
    body["status"]["conditions"][0]["message"] = "token valid until later"
    body["metadata"]["annotations"] = {"note": TOKEN}  # even if someone put one where it does not belong
    view = credential_view(body)
    shown = "\n".join(
        [
            *render_detail(view, [], NOW),
            *render_table([view], NOW),
            *render_screen([], Snapshot([view], []), None, [], NOW),
        ]
    )
    assert TOKEN not in shown


# --- only what can be attributed is shown -----------------------------------------------------------------


def changed(raw: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`raw` with `changes` applied: `a__b` is raw["a"]["b"], a value of None removes the key."""
    for key, value in changes.items():
        target, _, field = key.rpartition("__")
        where = raw[target] if target else raw
        if value is None:
            where.pop(field, None)
        else:
            where[field] = value
    return raw


def _shown(credential_uid: str, **changes: Any) -> bool:
    """Whether the Issued Event, with `changes` applied, shows for the credential."""
    raw = changed(event("Issued", uid="uid-1"), changes)
    return bool(events_of(credential_view(credential(uid=credential_uid)), [event_view(raw)]))


def test_the_operators_own_event_about_this_credential_is_shown() -> None:
    assert _shown("uid-1")
    assert _shown("uid-1", reportingComponent="simacan-token-operator")  # as the operator posts them
    assert _shown("uid-1", source=None, reportingComponent="simacan-token-operator")  # events.k8s.io/v1


@pytest.mark.parametrize(
    "changes",
    [
        {"involvedObject__uid": ""},
        {"involvedObject__uid": None},
        {"involvedObject__uid": "uid-2"},
        {"source": {"component": "someone-else"}},
        {"source": {"component": "kubectl"}, "reportingComponent": "simacan-token-operator"},
        {"reportingComponent": "someone-else"},  # source says the operator, reportingComponent does not
        {"source": None},  # no component named at all
        {"source": {}, "reportingComponent": ""},
        {"involvedObject__namespace": "other-team"},  # a new-style Event may name another namespace
        {"involvedObject__namespace": None},
        {"metadata__namespace": "other-team"},  # it lives elsewhere (status -A lists every namespace)
        {"involvedObject__name": "orders-api"},
    ],
    ids=lambda changes: ",".join(f"{k}={v}" for k, v in changes.items()),
)
def test_an_event_it_cannot_attribute_is_not_shown(changes: dict[str, Any]) -> None:
    assert not _shown("uid-1", **changes)


def test_a_credential_without_a_uid_claims_no_event() -> None:
    assert not _shown("")
    assert not _shown("", involvedObject__uid="")


# --- nothing printed can drive the terminal -------------------------------------------------------------

# Characters a terminal (or a bidi-aware viewer) acts on instead of showing, by Unicode category:
# Cc controls (C0, DEL, C1), Cf format (bidi overrides/isolates, zero-width), Cs surrogates,
# Co private use, Cn unassigned, Zl/Zp line and paragraph separators. Independent of `printable`,
# which uses str.isprintable.
ACTED_ON = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}

HOSTILE = {
    "clear screen": ("\x1b[2J\x1b[Hall good", "\\x1b[2J\\x1b[Hall good"),
    "OSC 8 hyperlink (ST)": (
        "\x1b]8;;https://evil.example/\x1b\\docs\x1b]8;;\x1b\\",
        "\\x1b]8;;https://evil.example/\\x1b\\docs\\x1b]8;;\\x1b\\",
    ),
    "OSC 8 hyperlink (BEL)": ("\x1b]8;;https://evil.example/\x07docs\x1b]8;;\x07", "\\x07docs"),
    "window title": ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
    "carriage return overwrite": ("HTTP 401 wrong password\rtoken valid            ", "password\\rtoken"),
    "backspaces": ("Failed\x08\x08\x08\x08\x08\x08Fine!!", "Failed\\x08"),
    "bidi override": ("token \u202edilav\u202c ok", "token \\u202edilav\\u202c ok"),
    "bidi isolates": ("\u2066a\u2067b\u2068c\u2069", "\\u2066a\\u2067b\\u2068c\\u2069"),
    "all embeddings": ("\u202a\u202b\u202c\u202d", "\\u202a\\u202b\\u202c\\u202d"),
    "NUL and DEL": ("a\x00b\x7fc", "a\\x00b\\x7fc"),
    "C1 CSI and NEL": ("\x9b2J\x85next", "\\x9b2J\\x85next"),
    "newline and tab": ("line one\nline\ttwo", "line one\\nline\\ttwo"),
    "line separator": ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),
    "zero width": ("to\u200bken\ufeff", "to\\u200bken\\ufeff"),
    "lone surrogate": ("bad \ud800 half", "bad \\ud800 half"),
    "tag character": ("x\U000e0041", "x\\U000e0041"),
}


def acted_on(text: str) -> list[str]:
    return [f"U+{ord(ch):04X}" for ch in text if unicodedata.category(ch) in ACTED_ON]


@pytest.mark.parametrize(("raw", "visible"), HOSTILE.values(), ids=HOSTILE.keys())
def test_printable_turns_what_a_terminal_acts_on_into_visible_escapes(raw: str, visible: str) -> None:
    assert acted_on(raw), "the case must hold something a terminal acts on"
    shown = printable(raw)
    assert acted_on(shown) == []
    assert visible in shown
    assert printable(shown) == shown, "escaping twice changes nothing"
    shown.encode("utf-8")  # no lone surrogate left to crash a UTF-8 terminal


@pytest.mark.parametrize(
    "text", ["café crème", "東京の認証サーバー", "Ünïcödé naïve façade", "ok — 100 % 🙂", "a\\b", ""]
)
def test_ordinary_text_stays_as_it_is(text: str) -> None:
    assert printable(text) == text


def _every_field(payload: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A credential and one of its Events with `payload` in every string either could print."""
    body = credential(reason=f"Reason{payload}", message=f"message {payload}", fingerprint=f"fp{payload}")
    body["metadata"]["name"] = f"fleet-api{payload}"
    body["metadata"]["namespace"] = f"logistics{payload}"
    body["status"]["secretName"] = f"secret{payload}"
    body["status"]["subject"] = f"subject{payload}"
    body["status"]["conditions"][0]["status"] = f"True{payload}"
    raw = event("AuthUnavailable", name=f"fleet-api{payload}")
    raw["metadata"]["namespace"] = raw["involvedObject"]["namespace"] = f"logistics{payload}"
    raw["type"] = f"Warning{payload}"
    raw["reason"] = f"AuthUnavailable{payload}"
    raw["message"] = f"the Auth API said {payload}"
    return body, raw


@pytest.mark.parametrize(("raw", "visible"), HOSTILE.values(), ids=HOSTILE.keys())
def test_no_printed_field_carries_a_raw_control_character(raw: str, visible: str) -> None:
    body, raw_event = _every_field(raw)
    view = credential_view(body)
    events = [event_view(raw_event)]
    assert events_of(view, events) == events, "the hostile Event is still the credential's own"
    shot = Snapshot([view], events)
    screens = {
        "detail": render_detail(view, events, NOW),
        "detail, events error": render_detail(view, [], NOW, events_error=f"cannot list Events: {raw}"),
        "table": render_table([view], NOW, namespaces=True),
        "events": render_events(events, NOW, objects=True),
        "demo screen": render_screen([], shot, None, [], NOW),
        "demo lines": render_plain(1, shot, None, events, NOW),
    }
    for what, lines in screens.items():
        for line in lines:
            assert acted_on(line) == [], f"{what}: {line!r}"
    detail = "\n".join(screens["detail"])
    for field in ("fleet-api", "logistics", "Reason", "message ", "secret", "subject", "fp", "True"):
        assert f"{field}{printable(raw)}" in detail, field
    assert f"the Auth API said {printable(raw)}" in detail
    assert f"Warning{printable(raw)}" in detail and f"AuthUnavailable{printable(raw)}" in detail
    assert printable(raw) in "\n".join(screens["detail, events error"])


def test_the_command_prints_what_a_server_sends_escaped_lone_surrogates_included() -> None:
    """Through HTTP and JSON, as `status` reads them: the emulator, unlike kube-apiserver (which turns
    a lone surrogate into U+FFFD), hands back exactly what was written."""
    hostile = "".join(raw for raw, _ in HOSTILE.values())
    with emulated_api() as url:
        api = RawApi(api_client_for(url))
        base = "/apis/auth.simacan.com/v1alpha1/namespaces/logistics/simacancredentials"
        api.json("POST", "/api/v1/namespaces", body={"metadata": {"name": "logistics"}})
        body = credential(message=f"token valid {hostile}")
        status = body.pop("status")
        created = api.json("POST", base, body=body)
        api.json("PUT", f"{base}/fleet-api/status", body={**created, "status": status})
        forged = event("AuthUnavailable", uid=created["metadata"]["uid"])
        forged["message"] = hostile
        forged["reason"] = f"Reason{hostile}"
        api.json("POST", "/api/v1/namespaces/logistics/events", body=forged)
        out, err = io.StringIO(), io.StringIO()
        code = command(lambda: api_client_for(url), "logistics", False, "fleet-api", out=out, err=err)
    printed = out.getvalue()
    assert code == EXIT_READY, printed + err.getvalue()
    assert "Events (last 1 of 1):" in printed
    assert acted_on(printed.replace("\n", "")) == []
    printed.encode("utf-8")
    assert printable(hostile) in printed
    assert "\\ud800" in printed


# --- ClusterSimacanCredentials ------------------------------------------------------------------------------

CONFLICT = "a Secret named simacan-token exists and is not ours"


def cluster_credential(
    name: str = "fleet",
    *,
    ready: str = "False",
    reason: str = "SecretConflict",
    uid: str = "cuid-1",
    failed: tuple[tuple[str, str, str], ...] = (("planning", "SecretConflict", CONFLICT),),
    failed_count: int | None = None,
    namespaces: int = 3,
) -> dict[str, Any]:
    return {
        "apiVersion": "auth.simacan.com/v1alpha1",
        "kind": "ClusterSimacanCredential",
        "metadata": {"name": name, "uid": uid, "generation": 2},
        "spec": {
            "credentialsSecretRef": {"name": "login", "namespace": "platform"},
            "secretName": "simacan-token",
        },
        "status": {
            "observedGeneration": 2,
            "secretName": "simacan-token",
            "namespaces": namespaces,
            "failedCount": len(failed) if failed_count is None else failed_count,
            "failedNamespaces": [{"namespace": n, "reason": r, "message": m} for n, r, m in failed],
            "subject": "fleet@example.com",
            "expiresAt": rfc3339(NOW + 48),
            "refreshedAt": rfc3339(NOW - 12),
            "nextRefreshAt": rfc3339(NOW + 28),
            "conditions": [
                {"type": "Ready", "status": ready, "reason": reason, "message": f"{len(failed)} failed"}
            ],
        },
    }


def cluster_event(reason: str, *, name: str = "fleet", uid: str = "cuid-1", age: float = 5) -> dict[str, Any]:
    """As the operator posts it: in namespace default, its involvedObject naming no namespace."""
    return {
        "metadata": {"name": f"{name}.abc", "namespace": "default"},
        "involvedObject": {"kind": "ClusterSimacanCredential", "name": name, "uid": uid},
        "type": "Normal" if reason == "Issued" else "Warning",
        "reason": reason,
        "message": f"{reason} happened",
        "source": {"component": "simacan-token-operator"},
        "reportingComponent": "simacan-token-operator",
        "firstTimestamp": rfc3339(NOW - age),
        "lastTimestamp": rfc3339(NOW - age),
        "count": 1,
    }


def test_cluster_detail_shows_ready_counts_failed_namespaces_expiry_next_refresh_and_subject() -> None:
    view = cluster_credential_view(cluster_credential())
    events = [event_view(cluster_event("SecretConflict", age=3)), event_view(cluster_event("Issued", age=30))]
    lines = render_cluster_detail(view, cluster_events_of(view, events), NOW)
    text = "\n".join(lines)
    assert not view.is_ready
    assert "Name:          fleet" in text
    assert "Kind:          ClusterSimacanCredential (cluster-scoped)" in text
    assert "Ready:         False (SecretConflict)" in text
    assert "  Message:     1 failed" in text
    assert "Token Secret:  simacan-token" in text
    assert "Namespaces:    3 selected, 1 failed" in text
    header = lines.index("Failed namespaces:")
    assert lines[header + 1].split() == ["NAMESPACE", "REASON", "MESSAGE"]
    assert lines[header + 2].split()[:2] == ["planning", "SecretConflict"] and CONFLICT in lines[header + 2]
    assert "Subject:       fleet@example.com" in text
    assert f"Expires at:    {rfc3339(NOW + 48)} (in 48s)" in text
    assert "Next refresh:  " in text and "(in 28s)" in text
    assert "Events (last 2 of 2):" in text
    assert text.index("Issued") < text.index("SecretConflict happened"), "oldest Event first"


def test_a_long_failed_list_says_it_is_the_first_of_more() -> None:
    failed = tuple((f"ns-{i:02d}", "SecretConflict", "not ours") for i in range(20))
    view = cluster_credential_view(cluster_credential(failed=failed, failed_count=50, namespaces=60))
    text = "\n".join(render_cluster_detail(view, [], NOW))
    assert "Namespaces:    60 selected, 50 failed" in text
    assert "Failed namespaces (first 20 of 50):" in text
    assert "Events:        none" in text


def _cluster_shown(**changes: Any) -> bool:
    raw = changed(cluster_event("Issued"), changes)
    return bool(cluster_events_of(cluster_credential_view(cluster_credential()), [event_view(raw)]))


def test_a_cluster_credentials_own_event_in_default_is_shown() -> None:
    assert _cluster_shown()
    assert _cluster_shown(involvedObject__namespace="")  # as some clients write it


@pytest.mark.parametrize(
    "changes",
    [
        {"involvedObject__uid": ""},
        {"involvedObject__uid": "cuid-2"},
        {"involvedObject__name": "other-fleet"},
        {"involvedObject__namespace": "planning"},  # names a namespace: not a cluster-scoped object's
        {"metadata__namespace": "planning"},  # the operator posts them in default only
        {"source": {"component": "kubectl"}},
        {"reportingComponent": "someone-else"},
    ],
    ids=lambda changes: ",".join(f"{k}={v}" for k, v in changes.items()),
)
def test_a_cluster_event_it_cannot_attribute_is_not_shown(changes: dict[str, Any]) -> None:
    assert not _cluster_shown(**changes)


def test_a_cluster_credential_is_shown_for_a_namespace_holding_its_secret_or_listed_as_failed() -> None:
    views = [
        cluster_credential_view(cluster_credential("serves", uid="u-s", failed=())),
        cluster_credential_view(
            cluster_credential("failed-here", uid="u-f", failed=(("logistics", "SecretConflict", CONFLICT),))
        ),
        cluster_credential_view(cluster_credential("elsewhere", uid="u-e")),
        cluster_credential_view(cluster_credential("other-name", uid="u-o", failed=())),
    ]
    owned = {"u-s": frozenset({"simacan-token"}), "u-o": frozenset({"not-its-token-secret"})}

    shown = shown_for(views, "logistics", owned)
    assert {c.name: c.here for c in shown} == {
        "serves": "logistics: holds its token Secret simacan-token",
        "failed-here": f"logistics: failed (SecretConflict): {CONFLICT}",
    }
    assert [c.name for c in shown_for(views, "logistics", None)] == ["failed-here"], (
        "without the Secrets' metadata only the status can tell"
    )
    assert shown_for(views, "logistics", {"u-e": frozenset({"simacan-token"})})[0].name == "failed-here"


@pytest.mark.parametrize(("raw", "visible"), HOSTILE.values(), ids=HOSTILE.keys())
def test_no_printed_field_of_a_cluster_credential_carries_a_raw_control_character(
    raw: str, visible: str
) -> None:
    body = cluster_credential(failed=((f"ns{raw}", f"Reason{raw}", f"message {raw}"),))
    body["metadata"]["name"] = f"fleet{raw}"
    body["spec"]["secretName"] = f"secret{raw}"
    body["status"]["subject"] = f"subject{raw}"
    body["status"]["conditions"][0].update(status=f"False{raw}", reason=f"Why{raw}", message=f"said {raw}")
    raw_event = cluster_event("Issued", name=f"fleet{raw}")
    raw_event["message"] = f"the Auth API said {raw}"
    view = cluster_credential_view(body)
    [here] = shown_for([view], f"ns{raw}", None)
    events = cluster_events_of(here, [event_view(raw_event)])
    assert len(events) == 1, "the hostile Event is still the credential's own"
    lines = [
        *render_cluster_detail(here, events, NOW),
        *render_cluster_detail(view, [], NOW, events_error=f"cannot list Events: {raw}"),
    ]
    for line in lines:
        assert acted_on(line) == [], line
    text = "\n".join(lines)
    for field in ("fleet", "secret", "subject", "False", "Why", "said ", "ns", "Reason", "message "):
        assert f"{field}{printable(raw)}" in text, field
    assert f"In namespace:  ns{printable(raw)}: failed" in text
    assert f"the Auth API said {printable(raw)}" in text


# --- the command over the emulator: both kinds --------------------------------------------------------------

SECRET_VALUE = "s3cr3t-token-value-never-printed"
CLUSTER_BASE = "/apis/auth.simacan.com/v1alpha1/clustersimacancredentials"


def _put_cluster_credential(api: RawApi, body: dict[str, Any]) -> str:
    status = body.pop("status")
    meta = body["metadata"]
    created = api.json("POST", CLUSTER_BASE, body={**body, "metadata": {"name": meta["name"]}})
    api.json("PUT", f"{CLUSTER_BASE}/{meta['name']}/status", body={**created, "status": status})
    return str(created["metadata"]["uid"])


def _token_secret(api: RawApi, namespace: str, owner_uid: str, name: str = "simacan-token") -> None:
    body = {
        "metadata": {"name": name, "labels": {OWNER_LABEL: owner_uid}},
        "stringData": {"token": SECRET_VALUE},
    }
    api.json("POST", f"/api/v1/namespaces/{namespace}/secrets", body=body)


def _run(
    url: str, namespace: str | None, all_namespaces: bool = False, **kwargs: Any
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = command(
        lambda: api_client_for(url),
        namespace,
        all_namespaces,
        None,
        out=out,
        err=err,
        clock=lambda: NOW,
        **kwargs,
    )
    return code, out.getvalue(), err.getvalue()


@contextmanager
def cluster_world() -> Iterator[str]:
    """logistics: SimacanCredential fleet-api (Ready) and the Secret of ClusterSimacanCredential fleet
    (Ready); planning: the Secret of routing (not Ready); failing lists logistics as failed."""
    with emulated_api() as url:
        api = RawApi(api_client_for(url))
        for namespace in ("logistics", "planning"):
            api.json("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
        base = "/apis/auth.simacan.com/v1alpha1/namespaces/logistics/simacancredentials"
        body = credential()
        status = body.pop("status")
        created = api.json("POST", base, body=body)
        api.json("PUT", f"{base}/fleet-api/status", body={**created, "status": status})
        fleet = _put_cluster_credential(
            api, cluster_credential("fleet", ready="True", reason="TokenValid", failed=())
        )
        elsewhere = (("other-team", "SecretConflict", CONFLICT),)
        routing = _put_cluster_credential(api, cluster_credential("routing", failed=elsewhere))
        _put_cluster_credential(
            api, cluster_credential("failing", failed=(("logistics", "SecretConflict", CONFLICT),))
        )
        _token_secret(api, "logistics", fleet)
        _token_secret(api, "logistics", routing, name="another-name")  # not routing's token Secret
        _token_secret(api, "planning", routing)
        api.json("POST", "/api/v1/namespaces/default/events", body=cluster_event("Issued", uid=fleet))
        forged = cluster_event("Forged", uid="not-fleet")
        forged["metadata"]["name"] = "fleet.forged"
        api.json("POST", "/api/v1/namespaces/default/events", body=forged)
        yield url


def test_status_n_shows_the_cluster_credentials_that_serve_the_namespace_with_their_events() -> None:
    with cluster_world() as url:
        code, out, err = _run(url, "logistics")
        planning = _run(url, "planning")
    assert code == EXIT_NOT_READY, out + err  # failing is not Ready
    assert "Name:          fleet-api" in out and "Namespace:     logistics" in out
    assert out.index("Name:          fleet-api") < out.index("Name:          fleet\n"), "namespaced first"
    assert "In namespace:  logistics: holds its token Secret simacan-token" in out
    assert f"In namespace:  logistics: failed (SecretConflict): {CONFLICT}" in out
    assert "Name:          routing" not in out, "its Secret in logistics is not its token Secret"
    fleet_block = out[out.index("Name:          fleet\n") :]
    assert "Issued" in fleet_block.split("Name:")[1], "its Event, read in namespace default"
    assert "Forged" not in out
    assert SECRET_VALUE not in out

    code, out, err = planning
    assert code == EXIT_NOT_READY, out + err
    assert "No simacancredentials" not in out
    assert "Name:          routing" in out and "In namespace:  planning: holds its token Secret" in out
    assert "Name:          fleet" not in out


def test_status_all_namespaces_lists_both_kinds_and_cluster_shows_one() -> None:
    with cluster_world() as url:
        everything = _run(url, None, True)
        one = _run(url, None, cluster="fleet")
        missing = _run(url, None, cluster="nobody")
        combined = _run(url, "logistics", cluster="fleet")
    code, out, err = everything
    assert code == EXIT_NOT_READY, out + err
    for name in ("fleet-api", "fleet", "routing", "failing"):
        assert f"Name:          {name}\n" in out, name
    assert "In namespace:" not in out, "no namespace in view"

    code, out, err = one
    assert code == EXIT_READY, out + err
    assert "Name:          fleet\n" in out and "Ready:         True (TokenValid)" in out
    assert "fleet-api" not in out and "routing" not in out
    assert "Issued" in out

    assert missing[0] == EXIT_ERROR and "ClusterSimacanCredential nobody not found" in missing[2]
    assert combined[0] == EXIT_ERROR and "--cluster cannot be combined" in combined[2]


def test_nothing_in_a_namespace_says_so_for_both_kinds() -> None:
    with cluster_world() as url:
        api = RawApi(api_client_for(url))
        api.json("POST", "/api/v1/namespaces", body={"metadata": {"name": "empty"}})
        code, out, _ = _run(url, "empty")
    assert code == EXIT_READY
    assert (
        out.strip()
        == "No simacancredentials found in namespace empty, nor clustersimacancredentials that serve it."
    )


# --- what a real API server answers and the emulator cannot: 403, 404 ---------------------------------------

FORBIDDEN = (
    'clustersimacancredentials.auth.simacan.com is forbidden: User "system:serviceaccount:logistics:viewer" '
    'cannot list resource "clustersimacancredentials" in API group "auth.simacan.com" at the cluster scope'
)


def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    return code, {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


Routes = dict[str, tuple[int, dict[str, Any]]]


@contextmanager
def fixed_api(routes: Routes) -> Iterator[str]:
    """A real HTTP server answering fixed JSON by path (the query is ignored); 404 elsewhere."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code, body = routes.get(self.path.split("?")[0], _status(404, "NotFound", "not found"))
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Handler) as url:
        yield url


NAMESPACED: Routes = {
    "/apis/auth.simacan.com/v1alpha1/namespaces/logistics/simacancredentials": (
        200,
        {"items": [credential()]},
    ),
    "/api/v1/namespaces/logistics/events": (200, {"items": []}),
}


def test_a_403_on_the_cluster_kind_is_shown_and_not_fatal() -> None:
    forbidden = _status(403, "Forbidden", FORBIDDEN)
    routes = {**NAMESPACED, CLUSTER_BASE: forbidden, f"{CLUSTER_BASE}/fleet": forbidden}
    with fixed_api(routes) as url:
        code, out, err = _run(url, "logistics")
        one = _run(url, None, cluster="fleet")
    assert code == EXIT_READY, out + err
    assert "Name:          fleet-api" in out
    assert (
        f"ClusterSimacanCredentials not shown: cannot list clustersimacancredentials: HTTP 403 {FORBIDDEN}"
        in out
    )
    assert one[0] == EXIT_ERROR and "HTTP 403" in one[2], "asked for by name, it is the answer"


def test_without_secret_metadata_only_a_cluster_credential_listing_the_namespace_as_failed_shows() -> None:
    cluster = [
        cluster_credential("failing", failed=(("logistics", "SecretConflict", CONFLICT),)),
        cluster_credential("serving", uid="u-2", ready="True", reason="TokenValid", failed=()),
    ]
    routes = {
        **NAMESPACED,
        CLUSTER_BASE: (200, {"items": cluster}),
        "/api/v1/namespaces/logistics/secrets": _status(403, "Forbidden", "secrets is forbidden"),
        "/api/v1/namespaces/default/events": _status(403, "Forbidden", "events is forbidden"),
    }
    with fixed_api(routes) as url:
        code, out, err = _run(url, "logistics")
    assert code == EXIT_NOT_READY, out + err
    assert "Name:          failing" in out and "Name:          serving" not in out
    assert "Note: cannot list Secret metadata in logistics: HTTP 403 Forbidden" in out
    assert "Events:        (cannot list Events in default: HTTP 403 Forbidden)" in out


def test_no_cluster_crd_means_no_cluster_credentials_not_an_error() -> None:
    with fixed_api(NAMESPACED) as url:  # the cluster kind's URL answers 404
        code, out, err = _run(url, "logistics")
    assert code == EXIT_READY, out + err
    assert "Name:          fleet-api" in out and "ClusterSimacanCredential" not in out


def test_the_cli_takes_cluster_name_and_refuses_it_beside_a_namespace() -> None:
    assert parse_args(["status", "--cluster", "fleet"]).cluster == "fleet"
    with pytest.raises(SystemExit):
        parse_args(["status", "-n", "logistics", "--cluster", "fleet"])
    err = io.StringIO()
    assert (
        command(_Client, None, False, "fleet-api", cluster="fleet", out=io.StringIO(), err=err) == EXIT_ERROR
    )
    assert "NAME cannot be combined" in err.getvalue()
