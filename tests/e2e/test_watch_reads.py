"""Reading less loses nothing, on a real API server: the operator reads a Secret only when the
Secret watch says it changed, and still undoes someone else's edit or deletion within a second,
still picks up a password change within a second, and after a gap in the watch (the API server
restarted) re-reads state with one list per watched scope, not one GET per credential.

Requests are counted by kube-apiserver itself (apiserver_request_total). The test observes
Secrets only through a LIST and WATCH (SecretRecorder), so every Secret GET counted is the
operator's. These tests take their own control plane: one of them restarts the API server.
"""

from __future__ import annotations

import base64
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from localenv.apiserver_requests import request_counts
from localenv.controlplane import ControlPlane, running_control_plane
from localenv.polling import eventually
from localenv.scenarios.faultkit import PASSWORD, USERNAME, SecretRecorder, install, scene

RESTORE_DEADLINE = 1.0


@pytest.fixture(scope="module")
def own_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Path]]:
    with running_control_plane(tmp_path_factory.mktemp("watch-reads-plane")) as plane:
        yield plane, install(plane)


def requests(plane: ControlPlane, verb: str, resource: str) -> int:
    """kube-apiserver's own count of `verb` requests on `resource` (all codes) since it started."""
    return sum(n for (v, res, _code), n in request_counts(plane).items() if v == verb and res == resource)


def api_ready(plane: ControlPlane) -> bool:
    try:
        response = httpx.get(
            f"{plane.server}/readyz",
            headers={"Authorization": f"Bearer {plane.admin_token}"},
            verify=ssl.create_default_context(cafile=str(plane.ca_file)),
            timeout=1,
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def restored_after(recorder: SecretRecorder, name: str, since: float) -> float | None:
    """Seconds from `since` to the first state of `name` after it that holds a token again."""
    for state in recorder.writes([name], since):
        if state.expires is not None:
            return state.at - since
    return None


def test_edits_deletions_and_password_changes_are_still_seen_within_a_second(
    own_plane: tuple[ControlPlane, Path], tmp_path: Path
) -> None:
    plane, operator_kubeconfig = own_plane
    names = ["alpha", "beta", "gamma"]
    with scene(plane, operator_kubeconfig, tmp_path, lifetime=600) as current:
        current.start_operator()
        current.create_credentials(names)
        eventually(lambda: current.all_ready(names), timeout=60, what="all Ready")
        core = current.ns.core
        with SecretRecorder(current.quiet_api(), current.ns.name) as recorder:
            gets = requests(plane, "GET", "secrets")

            edited = time.time()
            core.patch_namespaced_secret("alpha", current.ns.name, {"data": {"token": b64("not-a-token")}})
            eventually(lambda: restored_after(recorder, "alpha", edited), timeout=10, what="edit undone")
            deleted = time.time()
            core.delete_namespaced_secret("beta", current.ns.name)
            eventually(lambda: restored_after(recorder, "beta", deleted), timeout=10, what="deletion undone")

            calls = current.fake_auth.count("password")
            current.fake_auth.set_password(USERNAME, PASSWORD + "-new")
            changed = time.time()
            patch = {"data": {"password": b64(PASSWORD + "-new")}}
            core.patch_namespaced_secret("login", current.ns.name, patch)
            eventually(
                lambda: current.fake_auth.count("password") > calls, timeout=10, interval=0.02, what="login"
            )
            picked_up = time.time() - changed
            eventually(
                lambda: all(recorder.writes([n], changed) for n in names), timeout=10, what="new tokens"
            )
            operator_gets = requests(plane, "GET", "secrets") - gets

        edit_s = restored_after(recorder, "alpha", edited) or 99.0
        delete_s = restored_after(recorder, "beta", deleted) or 99.0
        print(
            f"edit undone in {edit_s:.2f}s, deletion in {delete_s:.2f}s, password change picked up in "
            f"{picked_up:.2f}s; {operator_gets} Secret GETs by the operator for all of it"
        )
        assert edit_s <= RESTORE_DEADLINE
        assert delete_s <= RESTORE_DEADLINE
        assert picked_up <= RESTORE_DEADLINE
        # The edited and the deleted Secret, and the login Secret's new version: each read once.
        assert operator_gets <= 3


def test_after_an_api_server_restart_state_is_listed_not_read_per_credential(
    own_plane: tuple[ControlPlane, Path], tmp_path: Path
) -> None:
    plane, operator_kubeconfig = own_plane
    assert plane.processes is not None
    names = [f"cred-{i:02d}" for i in range(30)]
    with scene(plane, operator_kubeconfig, tmp_path, lifetime=600) as current:
        operator = current.start_operator()
        current.create_credentials(names)
        eventually(lambda: current.all_ready(names), timeout=90, what="all Ready")
        log_before = len(operator.logs())

        plane.processes.kill("kube-apiserver", signal.SIGKILL)
        plane.processes.start("kube-apiserver")
        eventually(lambda: api_ready(plane), timeout=90, interval=0.1, what="API server ready again")
        # Counters start afresh with the new process: everything below happened after the restart.
        eventually(
            lambda: "listed again after a gap" in operator.logs()[log_before:],
            timeout=60,
            what="the operator's Secret watch listed again",
        )

        def settled() -> bool:
            first = requests(plane, "GET", "secrets")
            time.sleep(1.0)  # one sample a second: the resync's passes have all run when it is still
            return requests(plane, "GET", "secrets") == first

        eventually(settled, timeout=60, what="the resync settled")
        gets = requests(plane, "GET", "secrets")
        lists = requests(plane, "LIST", "secrets")
        print(f"after the restart: {gets} Secret GETs, {lists} Secret LISTs for {len(names)} credentials")
        assert gets < len(names) / 10, "state re-read with a list, not a GET per credential"
        # The operator's one list of its namespace; kube-controller-manager's informers relist too.
        assert lists <= 5, "a list per watched scope, not one per credential"
        assert operator.process is not None and operator.process.poll() is None
