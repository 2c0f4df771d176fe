"""`simacan-token-operator status` as a person or a script runs it, against the real API server.

It runs as a ServiceAccount that may read SimacanCredentials and Events but no Secret: the
command must need nothing more. For ClusterSimacanCredentials, as one that may also read those
(cluster-wide) and list Secret metadata in one namespace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localenv.controlplane import ControlPlane
from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import GROUP, PLURAL, Namespace, api_client
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually
from simacan_token_operator.kube.client import RawApi
from tests.conftest import PASSWORD, USERNAME, Issue, credential_spec
from tests.integration.test_cluster_credential import PLURAL as CLUSTER_PLURAL
from tests.integration.test_cluster_credential import SECRET, Fleet
from tests.integration.test_cluster_credential import cluster_operator as cluster_operator
from tests.integration.test_cluster_credential import fleet as fleet

VIEWER = "status-viewer"
OPERATOR = "simacan-token-operator"
# What a terminal acts on instead of showing: controls (C0, DEL, C1), format characters (bidi
# overrides, zero-width), surrogates, private use, unassigned, line/paragraph separators.
ACTED_ON = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
HOSTILE = (
    "\x1b[2J\x1b[H\x1b]0;pwned\x07\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\"
    " all good\rtoken valid \u202edilav\u202c \u2066x\u2069 nul\x00 del\x7f csi\x9b2J café 東京"
)


def viewer_kubeconfig(plane: ControlPlane, ns: Namespace) -> Path:
    """A kubeconfig of an identity that can get/list SimacanCredentials and list Events, nothing else."""
    rbac = client.RbacAuthorizationV1Api(ns.api)
    account: Any = {"metadata": {"name": VIEWER}}
    ns.core.create_namespaced_service_account(ns.name, account)
    role: Any = {
        "metadata": {"name": VIEWER},
        "rules": [
            {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
        ],
    }
    rbac.create_namespaced_role(ns.name, role)
    binding: Any = {
        "metadata": {"name": VIEWER},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": VIEWER},
        "subjects": [{"kind": "ServiceAccount", "name": VIEWER, "namespace": ns.name}],
    }
    rbac.create_namespaced_role_binding(ns.name, binding)
    return plane.kubeconfig_for_service_account(ns.name, VIEWER)


def status(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Its output as the terminal gets it: strict UTF-8, and no newline translation (which would
    hide a carriage return)."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    result = subprocess.run(
        [sys.executable, "-m", "simacan_token_operator", "status", *args],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode("utf-8"), result.stderr.decode("utf-8")
    )


def test_status_shows_a_ready_credential_and_exits_0_without_reading_secrets(
    installed: ControlPlane, ns: Namespace, issue: Issue
) -> None:
    issued = issue()
    kubeconfig = viewer_kubeconfig(installed, ns)
    viewer = client.CoreV1Api(api_client(kubeconfig))
    try:
        viewer.read_namespaced_secret("fleet-api", ns.name)
        raise AssertionError("the viewer must not be able to read Secrets")
    except ApiException as error:
        assert error.status == 403

    fingerprint = ns.credential("fleet-api")["status"]["tokenFingerprint"]
    result = status(kubeconfig, "-n", ns.name, "fleet-api")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Name:          fleet-api" in out
    assert "Ready:         True (TokenValid)" in out
    assert "Token Secret:  fleet-api" in out
    assert f"Fingerprint:   {fingerprint}" in out
    assert "Expires at:" in out and "(in " in out
    assert "Next refresh:" in out
    assert "Issued" in out and "simacan-token-operator" in out, "the operator's Event is listed"
    assert issued.token not in out + result.stderr


def test_status_exits_1_when_a_credential_shown_is_not_ready(
    installed: ControlPlane, ns: Namespace, fake_auth: FakeAuthAPI, issue: Issue
) -> None:
    issue()
    ns.create_credential("orders-api", credential_spec(fake_auth, secret="no-such-secret"))
    eventually(
        lambda: ns.ready_reason("orders-api") == ("False", "CredentialsSecretNotFound"),
        what="orders-api reported as CredentialsSecretNotFound",
    )
    kubeconfig = viewer_kubeconfig(installed, ns)

    everything = status(kubeconfig, "-n", ns.name)
    assert everything.returncode == 1, everything.stdout + everything.stderr
    assert "Name:          fleet-api" in everything.stdout
    assert "Ready:         False (CredentialsSecretNotFound)" in everything.stdout
    assert "no-such-secret" in everything.stdout, "the message names what to fix"

    assert status(kubeconfig, "-n", ns.name, "orders-api").returncode == 1
    assert status(kubeconfig, "-n", ns.name, "fleet-api").returncode == 0


def test_status_of_a_missing_credential_is_an_error_exit_2(installed: ControlPlane, ns: Namespace) -> None:
    result = status(installed.admin_kubeconfig, "-n", ns.name, "nobody")
    assert result.returncode == 2
    assert f"SimacanCredential {ns.name}/nobody not found" in result.stderr


def core_event(
    namespace: str, credential: dict[str, Any], reason: str, message: str, **changes: Any
) -> dict[str, Any]:
    """A core/v1 Event about `credential`, shaped like the operator's own; `changes` override fields."""
    meta = credential["metadata"]
    body: dict[str, Any] = {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "SimacanCredential",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": "Warning",
        "reason": reason,
        "message": message,
        "source": {"component": OPERATOR},
        "reportingComponent": OPERATOR,
        "reportingInstance": OPERATOR,
        "firstTimestamp": "2030-01-01T00:00:00Z",
        "lastTimestamp": "2030-01-01T00:00:00Z",
        "count": 1,
    }
    for key, value in changes.items():
        target, _, field = key.rpartition("__")
        (body[target] if target else body)[field] = value
    return body


def test_status_shows_only_the_operators_events_about_this_credential_and_escapes_them(
    installed: ControlPlane, ns: Namespace, issue: Issue
) -> None:
    issue()
    credential = ns.credential("fleet-api")
    ours = core_event(ns.name, credential, "HostileButOurs", HOSTILE)
    not_ours = {
        "ForgedNoUid": core_event(ns.name, credential, "ForgedNoUid", "x", involvedObject__uid=""),
        "ForgedOtherUid": core_event(
            ns.name, credential, "ForgedOtherUid", "x", involvedObject__uid="0b5e3c5e-aaaa-4000-8000-0"
        ),
        "ForgedOtherSource": core_event(
            ns.name, credential, "ForgedOtherSource", "x", source={"component": "kubectl"}
        ),
        "ForgedOtherReporter": core_event(
            ns.name, credential, "ForgedOtherReporter", "x", reportingComponent="someone-else"
        ),
    }
    for body in [ours, *not_ours.values()]:
        RawApi(ns.api).json("POST", f"/api/v1/namespaces/{ns.name}/events", body=body)
    stored = [
        str(e.message) for e in ns.core.list_namespaced_event(ns.name).items if e.reason == "HostileButOurs"
    ]
    assert stored and "\x1b[2J" in stored[0] and "\u202e" in stored[0], "the API server kept the controls"

    result = status(viewer_kubeconfig(installed, ns), "-n", ns.name, "fleet-api")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Issued" in out, "the operator's own Event is listed"
    assert "HostileButOurs" in out
    assert "\\x1b[2J\\x1b[H" in out and "\\u202edilav\\u202c" in out and "\\rtoken valid" in out
    assert "café 東京" in out, "ordinary text is left readable"
    raw = [f"U+{ord(c):04X}" for c in out.replace("\n", "") if unicodedata.category(c) in ACTED_ON]
    assert raw == [], f"raw control characters reached stdout: {raw}"
    shown = [reason for reason in not_ours if reason in out]
    assert shown == [], f"Events it cannot attribute were shown: {shown}"


def test_status_all_namespaces_ignores_an_event_naming_the_credential_from_another_namespace(
    installed: ControlPlane, ns: Namespace, issue: Issue, admin_api: Any
) -> None:
    """An Event with an eventTime may name an object in another namespace than its own (the API
    server only checks that for old-style Events): `status -A` lists both namespaces."""
    issue()
    credential = ns.credential("fleet-api")
    elsewhere = Namespace.create(admin_api)
    forged = core_event(
        elsewhere.name,
        credential,
        "ForgedFromElsewhere",
        "x",
        eventTime="2030-01-01T00:00:00.000000Z",
        action="Refresh",
        reportingComponent=OPERATOR,
    )
    RawApi(admin_api).json("POST", f"/api/v1/namespaces/{elsewhere.name}/events", body=forged)
    listed = elsewhere.core.list_namespaced_event(elsewhere.name).items
    assert [e.involved_object.namespace for e in listed] == [ns.name], "the API server accepted it"

    result = status(installed.admin_kubeconfig, "-A")
    assert f"Namespace:     {ns.name}" in result.stdout, result.stdout + result.stderr
    assert "Issued" in result.stdout
    assert "ForgedFromElsewhere" not in result.stdout


# --- ClusterSimacanCredentials ------------------------------------------------------------------------------


def cluster_viewer_kubeconfig(plane: ControlPlane, fleet: Fleet, secrets_in: Namespace) -> Path:
    """An identity that may read both kinds and list Events everywhere, and list Secrets (the
    command asks for their metadata only) in `secrets_in` alone. Removed with the fleet."""
    name = f"status-viewer-{fleet.name}"
    rbac = client.RbacAuthorizationV1Api(fleet.api)
    account: Any = {"metadata": {"name": name}}
    fleet.core.create_namespaced_service_account(fleet.platform.name, account)
    role: Any = {
        "metadata": {"name": name},
        "rules": [
            {"apiGroups": [GROUP], "resources": [PLURAL, CLUSTER_PLURAL], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
        ],
    }
    subjects = [{"kind": "ServiceAccount", "name": name, "namespace": fleet.platform.name}]
    rbac.create_cluster_role(role)
    binding: Any = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": subjects,
    }
    rbac.create_cluster_role_binding(binding)
    secrets: Any = {
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}],
    }
    rbac.create_namespaced_role(secrets_in.name, secrets)
    namespaced: Any = {**binding, "roleRef": {**binding["roleRef"], "kind": "Role"}}
    rbac.create_namespaced_role_binding(secrets_in.name, namespaced)
    return plane.kubeconfig_for_service_account(fleet.platform.name, name)


def _remove_cluster_viewer(fleet: Fleet) -> None:
    rbac = client.RbacAuthorizationV1Api(fleet.api)
    rbac.delete_cluster_role_binding(f"status-viewer-{fleet.name}")
    rbac.delete_cluster_role(f"status-viewer-{fleet.name}")


def _block(out: str, name: str) -> str:
    """The lines `status` printed for the credential `name`, up to the next one."""
    start = out.index(f"Name:          {name}\n")
    end = out.find("\nName:", start + 1)
    return out[start : end if end >= 0 else len(out)]


def test_status_shows_the_cluster_credentials_serving_a_namespace_all_and_one_by_name(
    installed: ControlPlane,
    fleet: Fleet,
    fake_auth: FakeAuthAPI,
    cluster_operator: Callable[..., OperatorProcess],
) -> None:
    served, occupied = fleet.namespace(), fleet.namespace()
    occupied.create_secret(SECRET, token="someone-elses")
    served.create_login_secret("login", USERNAME, PASSWORD)
    served.create_credential("fleet-api", credential_spec(fake_auth))
    fleet.create(fake_auth)
    cluster_operator()
    eventually(lambda: fleet.ready() == ("False", "SecretConflict"), what="conflict in one namespace")
    eventually(lambda: served.ready_reason("fleet-api") == ("True", "TokenValid"), what="fleet-api Ready")
    eventually(lambda: "Issued" in [e["reason"] for e in fleet.events()], what="the cluster kind's Event")
    token = served.secret_text(SECRET, "token")
    assert token
    kubeconfig = cluster_viewer_kubeconfig(installed, fleet, served)
    try:
        here = status(kubeconfig, "-n", served.name)
        there = status(kubeconfig, "-n", occupied.name)
        one = status(kubeconfig, "--cluster", fleet.name)
        everything = status(kubeconfig, "-A")
        occupied.delete_secret(SECRET)
        eventually(lambda: fleet.ready() == ("True", "TokenValid"), what="served once the Secret is gone")
        ready_one = status(kubeconfig, "--cluster", fleet.name)
        ready_here = status(kubeconfig, "-n", served.name)
    finally:
        _remove_cluster_viewer(fleet)

    assert here.returncode == 1, here.stdout + here.stderr
    assert "Name:          fleet-api" in here.stdout, "the namespace's own credential"
    mine = _block(here.stdout, fleet.name)
    assert "Kind:          ClusterSimacanCredential (cluster-scoped)" in mine
    assert f"In namespace:  {served.name}: holds its token Secret {SECRET}" in mine
    assert "Ready:         False (SecretConflict)" in mine
    assert "Issued" in mine and "simacan-token-operator" in mine, "its Events, read in namespace default"
    assert token not in here.stdout + there.stdout + one.stdout + everything.stdout

    assert there.returncode == 1, there.stdout + there.stderr
    assert f"In namespace:  {occupied.name}: failed (SecretConflict)" in there.stdout
    assert f"Note: cannot list Secret metadata in {occupied.name}: HTTP 403" in there.stdout

    assert one.returncode == 1, one.stdout + one.stderr
    detail = one.stdout
    assert "fleet-api" not in detail
    assert "Namespaces:    2 selected, 1 failed" in detail
    assert "Failed namespaces:" in detail and occupied.name in detail
    assert f"Subject:       {USERNAME}" in detail
    assert "Expires at:" in detail and "(in " in detail and "Next refresh:" in detail
    assert "SecretConflict" in detail.split("Events")[1], "the Warning Event is listed"

    assert "Name:          fleet-api" in everything.stdout, everything.stdout + everything.stderr
    assert f"Name:          {fleet.name}\n" in everything.stdout

    assert ready_one.returncode == 0, ready_one.stdout + ready_one.stderr
    assert "Namespaces:    2 selected, 0 failed" in ready_one.stdout
    assert ready_here.returncode == 0, ready_here.stdout + ready_here.stderr


def test_a_403_on_the_cluster_kind_is_shown_not_fatal(
    installed: ControlPlane, ns: Namespace, issue: Issue
) -> None:
    """The namespaced viewer may not list ClusterSimacanCredentials: its own namespace still shows."""
    issue()
    kubeconfig = viewer_kubeconfig(installed, ns)

    result = status(kubeconfig, "-n", ns.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ready:         True (TokenValid)" in result.stdout
    assert (
        "ClusterSimacanCredentials not shown: cannot list clustersimacancredentials: HTTP 403"
        in result.stdout
    )
    assert f'User "system:serviceaccount:{ns.name}:{VIEWER}" cannot list resource' in result.stdout

    named = status(kubeconfig, "--cluster", "fleet")
    assert named.returncode == 2, named.stdout + named.stderr
    assert "HTTP 403" in named.stderr
