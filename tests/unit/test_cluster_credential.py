"""ClusterSimacanCredential's pure parts: which namespaces it selects, the view each namespace's
pass reads, and how many namespaces' outcomes become one status."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest

from simacan_token_operator.model.clusterspec import (
    OWNER_LABEL,
    NamespaceInfo,
    namespace_info,
    namespaced_view,
    parse_cluster_spec,
)
from simacan_token_operator.model.limits import (
    MAX_CONDITION_MESSAGE_CHARS,
    MAX_FAILED_NAMESPACE_MESSAGE_CHARS,
)
from simacan_token_operator.model.reasons import INVALID_SPEC
from simacan_token_operator.model.spec import SpecError, parse_spec
from simacan_token_operator.model.tokens import TokenSet
from simacan_token_operator.reconcile.clusterstatus import (
    FAILED_LIST_CAP,
    NO_NAMESPACES,
    aggregate,
    fold_events,
    render_cluster_status,
    resumed,
)
from simacan_token_operator.reconcile.report import Note
from simacan_token_operator.reconcile.status import Outcome, StatusContext
from simacan_token_operator.reconcile.tokensecret import render


def spec(**extra: Any) -> dict[str, Any]:
    return {
        "credentialsSecretRef": {"name": "login", "namespace": "platform"},
        "secretName": "simacan-token",
        **extra,
    }


def ns(labels: dict[str, str] | None = None, terminating: bool = False) -> NamespaceInfo:
    return NamespaceInfo(labels or {}, terminating)


NAMESPACES = {
    "routing": ns({"team": "routing", "tier": "prod"}),
    "planning": ns({"team": "planning", "tier": "prod"}),
    "sandbox": ns({"team": "routing", "tier": "dev"}),
    "leaving": ns({"team": "routing", "tier": "prod"}, terminating=True),
    "plain": ns(),
}


@pytest.mark.parametrize(
    ("extra", "selected"),
    [
        ({}, set()),
        ({"namespaceSelector": {}}, {"routing", "planning", "sandbox", "plain"}),
        ({"namespaceSelector": {"matchLabels": {"team": "routing"}}}, {"routing", "sandbox"}),
        ({"namespaces": ["plain", "absent"]}, {"plain"}),
        (
            {"namespaceSelector": {"matchLabels": {"tier": "prod"}}, "namespaces": ["sandbox"]},
            {"routing", "planning", "sandbox"},
        ),
        (
            {
                "namespaceSelector": {
                    "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["dev"]}]
                }
            },
            {"routing", "planning", "plain"},
        ),
        (
            {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}},
            {"plain"},
        ),
        (
            {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]}},
            {"routing", "planning", "sandbox"},
        ),
        ({"namespaces": ["leaving"]}, set()),
    ],
)
def test_selection_is_the_label_selector_or_the_list_never_a_terminating_namespace(
    extra: dict[str, Any], selected: set[str]
) -> None:
    assert parse_cluster_spec("fleet", spec(**extra), "platform").select(NAMESPACES) == selected


@pytest.mark.parametrize(
    ("broken", "field"),
    [
        ({"credentialsSecretRef": None}, "credentialsSecretRef"),
        (
            {"credentialsSecretRef": {"name": "login", "namespace": "team-a"}},
            "credentialsSecretRef.namespace",
        ),
        ({"credentialsSecretRef": {"name": "login", "namespace": 7}}, "credentialsSecretRef.namespace"),
        ({"secretName": None}, "secretName"),
        ({"namespaces": "routing"}, "namespaces"),
        (
            {"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}},
            "namespaceSelector",
        ),
        ({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "namespaceSelector"),
        ({"refreshBefore": "soon"}, "refreshBefore"),
    ],
)
def test_a_spec_it_cannot_act_on_names_the_field(broken: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError, match=field):
        parse_cluster_spec("fleet", spec(**broken), "platform")


@pytest.mark.parametrize("ref", [{"name": "login"}, {"name": "login", "namespace": "platform"}])
def test_the_credentials_secret_is_in_the_configured_namespace_named_or_not(ref: dict[str, str]) -> None:
    parsed = parse_cluster_spec("fleet", spec(credentialsSecretRef=ref), "platform")
    assert (parsed.credentials_namespace, parsed.credentials_secret) == ("platform", "login")


def test_another_namespace_is_invalid_spec_naming_the_one_allowed() -> None:
    with pytest.raises(SpecError) as raised:
        parse_cluster_spec(
            "fleet", spec(credentialsSecretRef={"name": "login", "namespace": "team-a"}), "ops"
        )
    assert raised.value.reason == INVALID_SPEC
    assert raised.value.message == (
        "spec.credentialsSecretRef.namespace is 'team-a', but a ClusterSimacanCredential's credentials "
        "Secret must be in namespace 'ops' (the operator's --cluster-credentials-namespace): move the "
        "Secret there, then set that namespace or leave the field out"
    )


def test_each_namespace_reads_a_namespaced_view_that_labels_the_secret_with_the_owner() -> None:
    credential = {
        "apiVersion": "auth.simacan.com/v1alpha1",
        "kind": "ClusterSimacanCredential",
        "metadata": {"name": "fleet", "uid": "u-1", "generation": 3, "annotations": {}},
        "spec": spec(secretTemplate={"labels": {"team": "x"}}, suspend=True, namespaces=["a"]),
    }
    view = namespaced_view(credential, "routing")
    assert view["metadata"] == {
        "name": "fleet",
        "namespace": "routing",
        "uid": "u-1",
        "generation": 3,
        "annotations": {},
    }
    assert view["kind"] == "ClusterSimacanCredential"
    assert view["spec"] == {
        "credentialsSecretRef": {"name": "login"},
        "secretName": "simacan-token",
        "secretTemplate": {"labels": {"team": "x", OWNER_LABEL: "u-1"}},
        "suspend": True,
    }


def cluster_credential(**extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "auth.simacan.com/v1alpha1",
        "kind": "ClusterSimacanCredential",
        "metadata": {"name": "fleet", "uid": "u-1", "generation": 1, "annotations": {}},
        "spec": spec(**extra),
    }


AUTHORIZATION = {"authorization": "Bearer {{ .token }}", ".env": "EXP={{ .expiresAt }}"}


def test_secret_template_data_is_accepted_and_reaches_every_namespaces_view() -> None:
    parse_cluster_spec("fleet", spec(secretTemplate={"data": AUTHORIZATION}), "platform")  # no SpecError
    view = namespaced_view(cluster_credential(secretTemplate={"data": AUTHORIZATION}), "routing")
    assert view["spec"]["secretTemplate"]["data"] == AUTHORIZATION
    assert parse_spec("fleet", "routing", view["spec"]).data_templates == AUTHORIZATION


def test_the_rendered_secret_in_a_target_namespace_holds_the_template_keys() -> None:
    view = namespaced_view(cluster_credential(secretTemplate={"data": AUTHORIZATION}), "routing")
    owner = {"apiVersion": view["apiVersion"], "kind": view["kind"], "name": "fleet", "uid": "u-1"}
    issued = token(1_800_000_000.0)
    secret = render(parse_spec("fleet", "routing", view["spec"]), owner, issued, "fleet@example.com")
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert data["authorization"] == f"Bearer {issued.access_token}"
    assert data[".env"] == "EXP=2027-01-15T08:00:00Z"
    assert data["token"] == issued.access_token, "the standard keys stay"
    assert secret["metadata"]["namespace"] == "routing"
    assert secret["metadata"]["labels"][OWNER_LABEL] == "u-1"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({f"k{i}": "{{ .token }}" * 341 for i in range(16)}, id="16-keys-of-341-tokens"),
        pytest.param({f"k{i}": "{{ .token }}" for i in range(7)}, id="7-tokens"),
    ],
)
def test_data_that_could_render_past_the_bound_is_invalid_spec_for_the_cluster_kind(
    data: dict[str, str],
) -> None:
    with pytest.raises(SpecError, match=r"could render \d+ bytes") as raised:
        parse_cluster_spec("fleet", spec(secretTemplate={"data": data}), "platform")
    assert raised.value.reason == INVALID_SPEC


def test_six_token_templates_fit_the_render_bound_for_the_cluster_kind() -> None:
    six = {f"k{i}": "{{ .token }}" for i in range(6)}
    parse_cluster_spec("fleet", spec(secretTemplate={"data": six}), "platform")


def test_a_namespace_being_deleted_is_terminating() -> None:
    assert namespace_info({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}).terminating
    assert namespace_info({"metadata": {}, "status": {"phase": "Terminating"}}).terminating
    assert not namespace_info({"metadata": {"labels": {"a": "b"}}, "status": {"phase": "Active"}}).terminating


def token(expires_at: float) -> TokenSet:
    return TokenSet(
        access_token=f"a.{expires_at}.c",
        refresh_token=None,
        obtained_at=expires_at - 3600,
        expires_at=expires_at,
        refresh_expires_at=None,
        subject="fleet@example.com",
    )


def valid(expires_at: float, own: bool = True) -> Outcome:
    """A namespace holding a token; `own`: obtained by this process, not adopted from the Secret."""
    return Outcome(True, "TokenValid", "ok", token=token(expires_at), next_refresh=expires_at - 1200, own=own)


def test_no_namespace_is_ready_with_reason_no_namespaces() -> None:
    overall = aggregate({})
    assert (overall.ready, overall.reason) == (True, NO_NAMESPACES)


def test_a_token_adopted_from_a_namespace_never_speaks_for_the_cluster_credential() -> None:
    forged = dataclasses.replace(token(1000.0), subject="someone-else")
    outcomes = {"a": valid(5000.0), "tenant": dataclasses.replace(valid(1000.0, own=False), token=forged)}
    overall = aggregate(outcomes)
    assert overall.token is not None and overall.token.expires_at == 5000.0
    assert overall.token.subject == "fleet@example.com" and overall.next_refresh == 3800.0


def test_after_a_restart_the_last_status_speaks_until_an_own_token_exists() -> None:
    status = {"expiresAt": "1970-01-01T01:06:40Z", "refreshedAt": "1970-01-01T00:06:40Z", "subject": "fleet"}
    last = resumed({**status, "nextRefreshAt": "1970-01-01T00:46:40Z"})
    overall = aggregate({"tenant": valid(1000.0, own=False)}, last)
    assert overall.token is not None
    assert (overall.token.expires_at, overall.token.subject) == (4000.0, "fleet")
    assert overall.next_refresh == 2800.0
    assert aggregate({"a": valid(5000.0)}, last).token == token(5000.0), "an own token replaces it"


def test_ready_only_when_every_namespace_holds_a_valid_token() -> None:
    outcomes = {"a": valid(5000.0), "b": valid(4000.0)}
    overall = aggregate(outcomes)
    assert (overall.ready, overall.reason) == (True, "TokenValid")
    assert overall.token is not None and overall.token.expires_at == 4000.0, "the first to expire"
    assert overall.next_refresh == 2800.0

    outcomes["c"] = Outcome(False, "SecretConflict", "not ours", failure=True)
    overall = aggregate(outcomes)
    assert (overall.ready, overall.reason) == (False, "SecretConflict")
    assert "1 of 3 namespaces" in overall.message and "c (SecretConflict)" in overall.message


def test_status_counts_all_and_lists_a_capped_number_of_failures() -> None:
    outcomes = {f"ns-{i:03d}": Outcome(False, "SecretConflict", "not ours", failure=True) for i in range(50)}
    outcomes["ok"] = valid(5000.0)
    status = render_cluster_status(
        aggregate(outcomes), outcomes, StatusContext("simacan-token", 2, None, None, 1000.0)
    )
    assert (status["namespaces"], status["failedCount"]) == (51, 50)
    assert len(status["failedNamespaces"]) == FAILED_LIST_CAP
    assert status["failedNamespaces"][0] == {
        "namespace": "ns-000",
        "reason": "SecretConflict",
        "message": "not ours",
    }
    assert status["conditions"][0]["status"] == "False"
    assert status["expiresAt"] == "1970-01-01T01:23:20Z"


def test_events_of_many_namespaces_fold_into_one_per_reason() -> None:
    notes = [(f"ns-{i}", Note("Normal", "Issued", "issued the first token")) for i in range(7)]
    notes.append(("ns-9", Note("Warning", "SecretConflict", "not ours")))
    folded = fold_events(notes)
    assert folded == [
        Note(
            "Normal",
            "Issued",
            "7 namespaces (ns-0, ns-1, ns-2, ns-3, ns-4 and 2 more): issued the first token",
        ),
        Note("Warning", "SecretConflict", "namespace ns-9: not ours"),
    ]


def test_a_failed_namespaces_message_is_cut_to_its_bound() -> None:
    """A namespace's message can carry a long authURL or Secret name: the status stays bounded."""
    outcomes = {"a": Outcome(False, "AuthURLNotAllowed", "x" * 2000, failure=True)}
    context = StatusContext("simacan-token", 1, None, None, 1000.0)
    status = render_cluster_status(aggregate(outcomes), outcomes, context)

    [failed] = status["failedNamespaces"]
    assert len(failed["message"]) == MAX_FAILED_NAMESPACE_MESSAGE_CHARS
    assert failed["message"].endswith("[...]")
    assert len(status["conditions"][0]["message"]) <= MAX_CONDITION_MESSAGE_CHARS
