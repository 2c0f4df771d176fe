"""`simacan-token-operator status` and the demo's view: what a person reads, from status and Events only."""

from __future__ import annotations

import io
from typing import Any

import pytest

from localenv.demoview import AuthCalls, Progress, render_plain, render_screen, verdict
from simacan_token_operator.app.statusview import (
    EXIT_ERROR,
    Snapshot,
    command,
    credential_view,
    event_view,
    events_of,
    human_duration,
    render_detail,
    render_events,
    render_table,
)
from simacan_token_operator.reconcile.tokensecret import rfc3339

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
