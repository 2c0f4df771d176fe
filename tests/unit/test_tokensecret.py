"""The token Secret as workloads and other controllers see it."""

from __future__ import annotations

import base64
import copy
import dataclasses
import time
from typing import TYPE_CHECKING, Any

import pytest

from simacan_token_operator.model.spec import API_VERSION, KIND, CredentialSpec
from simacan_token_operator.model.tokens import TokenSet
from simacan_token_operator.reconcile.tokensecret import (
    ACCOUNT_ANNOTATION,
    EXPIRES_AT_ANNOTATION,
    MANAGED_BY_LABEL,
    REFRESHED_AT_ANNOTATION,
    in_sync,
    merged_for_replace,
    owned_by,
    read_stored,
    render,
    render_data,
)

if TYPE_CHECKING:
    from tests.unit.conftest import MakeJwt

OBTAINED = 1_700_000_000.0  # 2023-11-14T22:13:20Z
EXPIRES = OBTAINED + 3600
READ_AT = OBTAINED + 60
"""When a pass reads the Secret back (its clock, gathered.now)."""
UID = "7b0e6a52-1d7c-4c39-9a53-5f0e4c1f2a10"
ACCOUNT = "3f2a9c0d11e8b7a4"
OWNER = {"apiVersion": API_VERSION, "kind": KIND, "name": "fleet", "uid": UID}
FOREIGN_REF = {"apiVersion": "v1", "kind": "ConfigMap", "name": "bundle", "uid": "c0ffee00-4000-8000-0001"}


def credential(**fields: Any) -> CredentialSpec:
    defaults: dict[str, Any] = {
        "name": "fleet",
        "namespace": "logistics",
        "credentials_secret": "login",
        "labels": {"team": "routing"},
        "annotations": {"owner": "ops"},
    }
    return CredentialSpec(**{**defaults, **fields})


def b64decode(value: str) -> str:
    return base64.b64decode(value, validate=True).decode()


def utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


@pytest.fixture
def token(make_jwt: MakeJwt) -> TokenSet:
    access = make_jwt(iat=int(OBTAINED), exp=int(EXPIRES), preferred_username="bot@example.com")
    return TokenSet(access, "refresh-token-not-stored", OBTAINED, EXPIRES, subject="bot@example.com")


@pytest.fixture
def desired(token: TokenSet) -> dict[str, Any]:
    return render(credential(), OWNER, token, ACCOUNT)


def test_secret_holds_token_type_and_expiry(token: TokenSet, desired: dict[str, Any]) -> None:
    data = desired["data"]

    assert set(data) == {"token", "token_type", "expires_at"}
    assert b64decode(data["token"]) == token.access_token
    assert b64decode(data["token_type"]) == "Bearer"
    assert b64decode(data["expires_at"]) == utc(EXPIRES) == "2023-11-14T23:13:20Z"
    assert desired["type"] == "Opaque"


def test_credentials_sharing_a_token_share_its_encoding(token: TokenSet) -> None:
    """In a wave thousands of passes render the account's one token, each holding what it
    renders while it waits for its slot: 1.7 KiB per copy of a real token's base64."""
    first = render_data(credential(name="fleet"), token)
    other = render_data(credential(name="routes", namespace="planning"), dataclasses.replace(token))

    assert other["token"] is first["token"]
    assert b64decode(first["token"]) == token.access_token


def test_refresh_token_is_never_written(desired: dict[str, Any]) -> None:
    assert "refresh-token-not-stored" not in repr(desired)


def test_secret_is_named_after_the_credential_unless_secret_name_is_set(token: TokenSet) -> None:
    assert render(credential(), OWNER, token, ACCOUNT)["metadata"]["name"] == "fleet"
    named = render(credential(secret_name="fleet-token"), OWNER, token, ACCOUNT)
    assert named["metadata"]["name"] == "fleet-token"
    assert named["metadata"]["namespace"] == "logistics"


def test_labels_mark_the_secret_managed_and_carry_the_template(desired: dict[str, Any]) -> None:
    assert desired["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "simacan-token-operator",
        "team": "routing",
    }


def test_template_cannot_take_the_managed_by_label(token: TokenSet) -> None:
    body = render(credential(labels={MANAGED_BY_LABEL: "helm"}), OWNER, token, ACCOUNT)

    assert body["metadata"]["labels"][MANAGED_BY_LABEL] == "simacan-token-operator"


def test_annotations_show_expiry_refresh_time_and_account(desired: dict[str, Any]) -> None:
    assert desired["metadata"]["annotations"] == {
        "owner": "ops",
        "auth.simacan.com/expires-at": utc(EXPIRES).replace("Z", ".000Z"),
        "auth.simacan.com/refreshed-at": utc(OBTAINED).replace("Z", ".000Z"),
        "auth.simacan.com/account": ACCOUNT,
    }


def test_secret_is_controlled_by_its_credential(desired: dict[str, Any]) -> None:
    assert desired["metadata"]["ownerReferences"] == [{**OWNER, "controller": True}]
    assert owned_by(desired, UID)


def test_stored_secret_reads_back_what_was_written(token: TokenSet, desired: dict[str, Any]) -> None:
    stored = read_stored(desired, READ_AT)

    assert stored.token is not None
    assert stored.token.access_token == token.access_token
    assert (stored.token.obtained_at, stored.token.expires_at) == (OBTAINED, EXPIRES)
    assert stored.token.subject == "bot@example.com"
    assert stored.token.refresh_token is None
    assert stored.account == ACCOUNT
    assert stored.token_digest is not None and token.access_token not in stored.token_digest


def test_a_stored_token_is_judged_at_the_time_it_is_read(desired: dict[str, Any]) -> None:
    """Read by a clock two days before it was issued, the token claims to live longer than any
    Simacan token does: the time comes from the caller, not from the wall clock."""
    assert read_stored(desired, READ_AT).token is not None
    assert read_stored(desired, OBTAINED - 2 * 86400).token is None


def test_same_token_has_the_same_digest(token: TokenSet, desired: dict[str, Any]) -> None:
    again = render(credential(labels={}), OWNER, token, ACCOUNT)

    assert read_stored(desired, READ_AT).token_digest == read_stored(again, READ_AT).token_digest


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({}, id="no-token-key"),
        pytest.param({"token": "%%%not-base64%%%"}, id="not-base64"),
        pytest.param({"token": base64.b64encode(b"\xff\xfe").decode()}, id="not-utf8"),
        pytest.param({"token": base64.b64encode(b"opaque-token").decode()}, id="not-a-jwt"),
    ],
)
def test_secret_without_a_readable_token_reads_as_none(desired: dict[str, Any], data: dict[str, str]) -> None:
    broken = {**desired, "data": data}

    stored = read_stored(broken, READ_AT)

    assert stored.token is None
    assert stored.account == ACCOUNT


def test_empty_secret_reads_as_nothing() -> None:
    stored = read_stored({"metadata": {}}, READ_AT)

    assert (stored.token, stored.account, stored.token_digest) == (None, None, None)


def edited(body: dict[str, Any], edit: str) -> dict[str, Any]:
    """The Secret after someone else changed it in one way."""
    actual = copy.deepcopy(body)
    meta = actual["metadata"]
    meta["resourceVersion"] = "4711"
    meta["uid"] = "secret-uid"
    match edit:
        case "untouched":
            pass
        case "extra-label":
            meta["labels"]["kustomize.io/added"] = "yes"
        case "extra-annotation":
            meta["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
        case "extra-owner":
            meta["ownerReferences"].append(FOREIGN_REF)
        case "token-edited":
            actual["data"]["token"] = base64.b64encode(b"something-else").decode()
        case "data-key-added":
            actual["data"]["extra"] = base64.b64encode(b"x").decode()
        case "data-key-removed":
            del actual["data"]["expires_at"]
        case "managed-by-removed":
            del meta["labels"][MANAGED_BY_LABEL]
        case "template-label-changed":
            meta["labels"]["team"] = "billing"
        case "expiry-annotation-removed":
            del meta["annotations"][EXPIRES_AT_ANNOTATION]
        case "type-changed":
            actual["type"] = "kubernetes.io/basic-auth"
        case "foreign-owner":
            meta["ownerReferences"] = [{**OWNER, "uid": "someone-else", "controller": True}]
        case "owner-removed":
            del meta["ownerReferences"]
        case _:
            raise AssertionError(edit)
    return actual


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("untouched", True),
        ("extra-label", True),
        ("extra-annotation", True),
        ("extra-owner", True),
        ("token-edited", False),
        ("data-key-added", False),
        ("data-key-removed", False),
        ("managed-by-removed", False),
        ("template-label-changed", False),
        ("expiry-annotation-removed", False),
        ("type-changed", False),
        ("foreign-owner", False),
        ("owner-removed", False),
    ],
)
def test_in_sync_allows_additions_not_edits(desired: dict[str, Any], edit: str, expected: bool) -> None:
    assert in_sync(edited(desired, edit), desired) is expected


def test_replace_keeps_what_others_added_and_restores_ours(desired: dict[str, Any]) -> None:
    actual = edited(desired, "token-edited")
    meta = actual["metadata"]
    meta["labels"].update({"kustomize.io/added": "yes", "team": "billing"})
    meta["annotations"]["note"] = "keep me"
    meta["ownerReferences"].append(FOREIGN_REF)

    body = merged_for_replace(actual, desired)

    assert body["metadata"]["resourceVersion"] == "4711"
    assert body["metadata"]["labels"] == {**desired["metadata"]["labels"], "kustomize.io/added": "yes"}
    assert body["metadata"]["annotations"] == {**desired["metadata"]["annotations"], "note": "keep me"}
    assert body["metadata"]["ownerReferences"] == [FOREIGN_REF, {**OWNER, "controller": True}]
    assert body["data"] == desired["data"]
    assert in_sync(body, desired)


def test_replace_does_not_duplicate_our_owner_reference(desired: dict[str, Any]) -> None:
    body = merged_for_replace(edited(desired, "untouched"), desired)

    assert [ref["uid"] for ref in body["metadata"]["ownerReferences"]] == [UID]


def test_replace_does_not_change_the_desired_body(desired: dict[str, Any]) -> None:
    before = copy.deepcopy(desired)

    merged_for_replace(edited(desired, "extra-label"), desired)

    assert desired == before


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param({"ownerReferences": [{"uid": UID}]}, True, id="ours"),
        pytest.param({"ownerReferences": [{"uid": "other"}, {"uid": UID}]}, True, id="ours-among-others"),
        pytest.param({"ownerReferences": [{"uid": "other"}]}, False, id="foreign"),
        pytest.param({"ownerReferences": None}, False, id="null-owners"),
        pytest.param({}, False, id="no-owners"),
    ],
)
def test_owned_by_looks_for_the_credentials_uid(metadata: dict[str, Any], expected: bool) -> None:
    assert owned_by({"metadata": metadata}, UID) is expected


def test_refreshed_at_annotation_is_what_a_restart_reads(desired: dict[str, Any]) -> None:
    """After a restart the stored token's life starts at refreshed-at, not at the JWT's iat."""
    restarted = copy.deepcopy(desired)
    restarted["metadata"]["annotations"][REFRESHED_AT_ANNOTATION] = utc(OBTAINED + 60)

    stored = read_stored(restarted, READ_AT)

    assert stored.token is not None
    assert stored.token.obtained_at == OBTAINED + 60
    assert restarted["metadata"]["annotations"][ACCOUNT_ANNOTATION] == stored.account


def test_annotations_keep_milliseconds_so_a_restart_schedules_the_same_refresh(token: TokenSet) -> None:
    precise = TokenSet(
        access_token=token.access_token,
        refresh_token=None,
        obtained_at=OBTAINED + 0.25,
        expires_at=EXPIRES - 0.5,
    )
    stored = read_stored(render(credential(), OWNER, precise, ACCOUNT), READ_AT)

    assert stored.token is not None
    assert stored.token.obtained_at == pytest.approx(OBTAINED + 0.25)
    assert stored.token.expires_at == pytest.approx(EXPIRES - 0.5), "earlier than the JWT's exp, as computed"
