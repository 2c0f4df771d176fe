"""The Ready condition's transitions, as `kubectl describe` shows them."""

from __future__ import annotations

from simacan_token_operator.model.tokens import TokenSet
from simacan_token_operator.reconcile.status import (
    Outcome,
    StatusContext,
    present,
    ready_reason,
    ready_state,
    render_status,
    status_digest,
)

T0 = 1_800_000_000.0
TOKEN = TokenSet("header.claims.signature", None, obtained_at=T0, expires_at=T0 + 3600, subject="api-user")


def render(outcome: Outcome, previous: dict[str, object] | None = None, now: float = T0) -> dict[str, object]:
    return render_status(outcome, StatusContext("fleet-api", 3, None, ready_state(previous or {}), now))


def test_valid_token_is_described_without_the_token_itself() -> None:
    status = render(Outcome(True, "TokenValid", "ok", token=TOKEN, next_refresh=T0 + 2400))
    assert status["expiresAt"] == "2027-01-15T09:00:00Z"
    assert status["refreshedAt"] == "2027-01-15T08:00:00Z"
    assert status["nextRefreshAt"] == "2027-01-15T08:40:00Z"
    assert status["subject"] == "api-user"
    assert status["observedGeneration"] == 3
    assert TOKEN.access_token not in repr(status)
    assert ready_reason(status) == "TokenValid"


def test_transition_time_moves_only_when_ready_flips() -> None:
    first = render(Outcome(True, "TokenValid", "ok", token=TOKEN))
    same_state = render(
        Outcome(True, "AuthUnavailable", "retrying", token=TOKEN), previous=first, now=T0 + 60
    )
    flipped = render(Outcome(False, "AuthUnavailable", "expired"), previous=same_state, now=T0 + 3600)

    def transition(status: dict[str, object]) -> object:
        return status["conditions"][0]["lastTransitionTime"]  # type: ignore[index]

    assert transition(same_state) == transition(first) == "2027-01-15T08:00:00Z"
    assert transition(flipped) == "2027-01-15T09:00:00Z"


def test_fields_that_no_longer_apply_are_deleted_by_the_merge_patch() -> None:
    status = render(Outcome(False, "CredentialsSecretNotFound", "create it"))
    assert status["expiresAt"] is None and status["subject"] is None
    assert "expiresAt" not in present(status)


def test_a_restarted_worker_recognises_the_status_it_wrote_before() -> None:
    written = render(Outcome(True, "TokenValid", "ok", token=TOKEN, next_refresh=T0 + 2400))
    as_stored = present(written)  # what the API server keeps after the merge patch
    again = render(
        Outcome(True, "TokenValid", "ok", token=TOKEN, next_refresh=T0 + 2400),
        previous=as_stored,
        now=T0 + 900,
    )
    assert status_digest(again) == status_digest(as_stored)
