"""The install is real: the image built from `Dockerfile` runs from the release files on a real node.

A control plane with kube-scheduler and the Deployment controllers, and a node with a pod network
(localenv/podnetwork.py: a bridge whose pods live in network namespaces this run creates, and
kube-proxy). The image is built here with buildah (localenv/build-image.sh) and loaded into the
node's containerd. The release files a user downloads (`scripts/release --render-only`: the
cluster-wide install, then the CRDs and the namespaced install) are applied through an overlay that
changes only the image reference, the allowed Auth API host and the CA of the fake Auth API,
which listens on the pod network's gateway. No operator runs as a local process here: every token
comes from a pod.

The tests share one cluster and run in file order, so they need one xdist worker for the file
(`--dist loadfile`, as scripts/test runs them): install, lease, tokens, probes and metrics,
failover, container kill, frozen process, upgrade, memory under a few hundred credentials, and then
the namespaced install.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localenv.controlplane import ControlPlane, running_control_plane
from localenv.fakeauth import Call, FakeAuthAPI
from localenv.images import BUSYBOX_IMAGE
from localenv.k8s import Namespace, api_client
from localenv.node import Node, running_node
from localenv.operator_image import OPERATOR_IMAGE_REPOSITORY, build_operator_image
from localenv.podnetwork import POD_GATEWAY, POD_SUBNET
from localenv.polling import eventually
from localenv.release import IMAGE_REPOSITORY, INSTALL, project_version
from localenv.scenarios.faultkit import token_expiry
from simacan_token_operator.kube.leader import LeaseTimings
from simacan_token_operator.model.spec import REFRESH_REQUESTED_ANNOTATION
from tests.conftest import SUMMARY
from tests.e2e.conftest import REPO, kubectl

INSTALL_NAMESPACE = "simacan-token-operator"
DEPLOYMENT = "simacan-token-operator"
LEASE = "simacan-token-operator"
FIRST_TAG, SECOND_TAG = "e2e-1", "e2e-2"
VERSION = project_version()
CRDS_FILE = "simacan-token-operator-crds.yaml"
NAMESPACED_FILE = "simacan-token-operator-namespaced.yaml"
CA_MOUNT = "/etc/simacan-auth-ca"
PASSWORD = "correct horse battery staple"
TOKEN_LIFETIME_SECONDS = 120
"""The operator refreshes two thirds into the lifetime (40 s left), more than a Lease's 15 s plus the
standby's 2 s retry: a leader lost just before a refresh leaves its successor time, as an hour's token
does in production. Shorter tokens would test the Lease timings, not the install."""
READY_TIMEOUT_SECONDS = 180
UPGRADE_TOKEN_LIFETIME_SECONDS = 900
LEASE_DURATION_SECONDS = LeaseTimings().duration
LOAD_CREDENTIALS, LOAD_NAMESPACES = 300, 3
LIVENESS_RESTART_TIMEOUT_SECONDS = 150  # initialDelay 10 s + 3 failed probes 20 s apart, 5 s each


def _next_patch(version: str) -> str:
    major, minor, patch = version.split(".")[:3]
    return f"{major}.{minor}.{int(patch) + 1}"


NEXT_VERSION = _next_patch(VERSION)
"""The upgrade's image: the same tree, labelled as the next patch release."""


@dataclass
class Cluster:
    plane: ControlPlane
    node: Node
    fake_auth: FakeAuthAPI
    images: dict[str, Path]
    release: Path
    work_dir: Path
    api: client.ApiClient
    imported: set[str] = field(default_factory=set)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def kubectl(self, *args: str) -> str:
        return kubectl(self.plane, *args)

    def load_image(self, tag: str) -> None:
        """As a pull would: the image reaches the node's containerd before a pod needs it."""
        if tag not in self.imported:
            self.node.import_image(self.images[tag])
            self.imported.add(tag)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tags of the image, built from the repository's Dockerfile (the second only relabelled)."""
    output = Path(tmp_path_factory.mktemp("images"))
    started = time.monotonic()
    built = {
        FIRST_TAG: build_operator_image(FIRST_TAG, VERSION, output),
        SECOND_TAG: build_operator_image(SECOND_TAG, NEXT_VERSION, output),
    }
    SUMMARY.append(f"e2e: operator image built with buildah (two tags) in {time.monotonic() - started:.1f}s")
    return built


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release files as a user downloads them, rendered the way the release is."""
    output = Path(tmp_path_factory.mktemp("release"))
    result = subprocess.run(
        [str(REPO / "scripts" / "release"), "--render-only", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHON": sys.executable},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return output


@pytest.fixture(scope="module")
def cluster(
    images: dict[str, Path], release: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    work = Path(tmp_path_factory.mktemp("pods"))
    with (
        running_control_plane(work, pods=True) as plane,
        running_node(plane, work, pods=True) as node,
        FakeAuthAPI(tls=True, host=POD_GATEWAY, access_lifetime=TOKEN_LIFETIME_SECONDS) as fake_auth,
    ):
        SUMMARY.append(
            f"e2e: node with pod network (kube-scheduler, kube-proxy, CNI bridge) provisioned in "
            f"{plane.provision_seconds + node.provision_seconds:.1f}s"
        )
        api = api_client(plane.admin_kubeconfig)
        try:
            yield Cluster(plane, node, fake_auth, images, release, work, api)
        finally:
            api.close()  # type: ignore[no-untyped-call]


# --- the install ------------------------------------------------------------------------------------


def test_the_deployment_runs_two_ready_pods_as_uid_10001_on_a_read_only_root(cluster: Cluster) -> None:
    cluster.load_image(FIRST_TAG)
    overlay = _overlay(cluster, "cluster-wide", INSTALL, FIRST_TAG, namespace=INSTALL_NAMESPACE)
    started = time.monotonic()
    cluster.kubectl("apply", "-k", str(overlay))
    pods = _wait_for_ready_pods(cluster, INSTALL_NAMESPACE, image_tag=FIRST_TAG)
    ready_after = time.monotonic() - started
    SUMMARY.append(f"e2e: `kubectl apply -k` of the overlay to both replicas Ready: {ready_after:.1f}s")

    for pod in pods:
        assert pod.status.pod_ip and _in_pod_subnet(pod.status.pod_ip), pod.status.pod_ip
        pid = cluster.node.container_pid(_container_id(pod))
        status = Path(f"/proc/{pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == ["10001"] * 4, uid_line
        gid_line = next(line for line in status.splitlines() if line.startswith("Gid:"))
        assert gid_line.split()[1] == "10001", gid_line
        assert _root_mount_options(pid) & {"ro"}, "the container's root filesystem is writable"
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert any(part.endswith(b"simacan-token-operator") for part in cmdline), cmdline


def test_exactly_one_replica_holds_the_lease(cluster: Cluster) -> None:
    pods = {pod.metadata.name for pod in _ready_pods(cluster, INSTALL_NAMESPACE)}
    holder = eventually(lambda: _lease_holder(cluster, INSTALL_NAMESPACE), timeout=60, what="a Lease holder")
    assert holder in pods
    # Each replica says for itself whether it works, on /metrics from inside the pod network.
    leader_gauges = {
        name: _metric(_fetch_in_pod_network(cluster, f"http://{ip}:8080/metrics")[0], "simacan_leader")
        for name, ip in _pod_ips(cluster, INSTALL_NAMESPACE).items()
    }
    assert leader_gauges == {name: 1.0 if name == holder else 0.0 for name in pods}


def test_credentials_get_their_secrets_from_the_pod(cluster: Cluster) -> None:
    ns = Namespace.create(cluster.api, prefix="install")
    _create_credential(ns, cluster.fake_auth, "fleet-api", user="first-user")
    ns.ready_token("fleet-api")
    assert (token_expiry(ns.secret("fleet-api")) or 0) > time.time()
    logins = _logins(cluster, "first-user")
    assert logins, "no login reached the fake Auth API"
    pod_ips = set(_pod_ips(cluster, INSTALL_NAMESPACE).values())
    assert {call.peer for call in logins} <= pod_ips, (
        f"logins came from {sorted({call.peer for call in logins})}, not from the pods {sorted(pod_ips)}"
    )


def test_a_cluster_credential_reads_its_login_only_in_the_install_namespace(cluster: Cluster) -> None:
    """The Deployment's POD_NAMESPACE (downward API) is the cluster credentials namespace: a login
    Secret there serves; one in any other namespace is InvalidSpec and gives no token."""
    cluster.fake_auth.add_user("cluster-user", PASSWORD)
    Namespace(cluster.api, INSTALL_NAMESPACE).create_login_secret("cluster-login", "cluster-user", PASSWORD)
    team = Namespace.create(cluster.api, prefix="install")
    team.create_login_secret("login", "cluster-user", PASSWORD)
    custom = client.CustomObjectsApi(cluster.api)

    def create(name: str, ref: dict[str, str]) -> None:
        spec = {"credentialsSecretRef": ref, "secretName": name, "namespaces": [team.name]}
        body = {
            "apiVersion": "auth.simacan.com/v1alpha1",
            "kind": "ClusterSimacanCredential",
            "metadata": {"name": name},
            "spec": {**spec, "authURL": cluster.fake_auth.base_url},
        }
        custom.create_cluster_custom_object("auth.simacan.com", "v1alpha1", "clustersimacancredentials", body)

    def ready(name: str) -> tuple[str, str] | None:
        found: Any = custom.get_cluster_custom_object(
            "auth.simacan.com", "v1alpha1", "clustersimacancredentials", name
        )
        conditions = (found.get("status") or {}).get("conditions") or []
        return next(((c["status"], c["reason"]) for c in conditions if c["type"] == "Ready"), None)

    create("install-served", {"name": "cluster-login"})
    create("install-refused", {"name": "login", "namespace": team.name})
    try:
        eventually(lambda: ready("install-served") == ("True", "TokenValid"), timeout=60, what="served")
        eventually(lambda: ready("install-refused") == ("False", "InvalidSpec"), timeout=30, what="refused")
        assert team.secret_text("install-served", "token")
        assert team.secret("install-refused") is None
        assert len(_logins(cluster, "cluster-user")) == 1, "one login: the refused one made none"
    finally:
        for name in ("install-served", "install-refused"):
            custom.delete_cluster_custom_object(
                "auth.simacan.com", "v1alpha1", "clustersimacancredentials", name
            )


def test_metrics_and_probes_answer_inside_the_pod_network(cluster: Cluster) -> None:
    pod_ips = _pod_ips(cluster, INSTALL_NAMESPACE)
    service: Any = cluster.core.read_namespaced_service(f"{DEPLOYMENT}-metrics", INSTALL_NAMESPACE)
    cluster_ip = service.spec.cluster_ip
    urls = [
        *(f"http://{ip}:8081/healthz" for ip in pod_ips.values()),
        *(f"http://{ip}:8081/readyz" for ip in pod_ips.values()),
        f"http://{cluster_ip}:{service.spec.ports[0].port}/metrics",  # through kube-proxy
    ]
    answers = _fetch_in_pod_network(cluster, *urls)
    assert "simacan_credential_ready" in answers[-1]


# --- failures on the node ---------------------------------------------------------------------------


def test_deleting_the_leader_pod_fails_over_without_an_expired_token(cluster: Cluster) -> None:
    ns = Namespace.create(cluster.api, prefix="failover")
    for name in ("route-a", "route-b"):
        _create_credential(ns, cluster.fake_auth, name, user="failover-user")
        ns.ready_token(name)
    holder = _lease_holder(cluster, INSTALL_NAMESPACE)
    assert holder
    pods_before = set(_pod_ips(cluster, INSTALL_NAMESPACE))
    standby = next(name for name in pods_before if name != holder)

    deleted_at = time.monotonic()
    cluster.core.delete_namespaced_pod(holder, INSTALL_NAMESPACE)
    watch = _TokenWatch(ns, ("route-a", "route-b"))

    def new_leader() -> str | None:
        watch.check()
        current = _lease_holder(cluster, INSTALL_NAMESPACE)
        return current if current and current != holder else None

    successor = eventually(new_leader, timeout=60, interval=0.1, what="another replica holding the Lease")
    without_leader = time.monotonic() - deleted_at
    who = "the standby" if successor == standby else "the replacement pod"
    SUMMARY.append(f"e2e: leader pod deleted; {who} held the Lease {without_leader:.1f}s later")
    # The standby polls the released Lease every 2 s; the ReplicaSet's replacement pod may start and
    # take it first. Either is a live replica of this Deployment; the deleted pod never leads again.
    assert successor == standby or successor not in pods_before, (successor, pods_before)
    # The deleted leader handed the Lease over (SIGTERM): no wait for the 15 s Lease to run out.
    assert without_leader < LEASE_DURATION_SECONDS, f"no leader for {without_leader:.1f}s"
    # The successor works: a refresh asked for now is done by it, and no token ever expired meanwhile.
    before = ns.secret_text("route-a", "token")
    asked = {REFRESH_REQUESTED_ANNOTATION: str(time.time())}
    ns.patch_credential("route-a", {"metadata": {"annotations": asked}})
    watch.until(lambda: ns.secret_text("route-a", "token") != before, timeout=60)
    peers = {call.peer for call in _logins(cluster, "failover-user")}
    # A replacement pod can take the Lease before its readiness probe has passed: wait for it.
    successor_ip = eventually(
        lambda: _pod_ips(cluster, INSTALL_NAMESPACE).get(successor), timeout=60, what="the successor Ready"
    )
    assert successor_ip in peers
    _wait_for_ready_pods(cluster, INSTALL_NAMESPACE, image_tag=FIRST_TAG)


def test_a_killed_container_is_restarted_by_kubelet_in_the_same_pod(cluster: Cluster) -> None:
    pod = _ready_pods(cluster, INSTALL_NAMESPACE)[0]
    name, restarts = pod.metadata.name, _restart_count(pod)
    os.kill(cluster.node.container_pid(_container_id(pod)), signal.SIGKILL)

    def restarted_and_ready() -> bool:
        current = cluster.core.read_namespaced_pod(name, INSTALL_NAMESPACE)
        return _restart_count(current) == restarts + 1 and _is_ready(current)

    eventually(
        restarted_and_ready, timeout=READY_TIMEOUT_SECONDS, interval=0.5, what=f"{name} restarted and Ready"
    )
    # Restarted in place, as docs/operations.md says: the pod, its name and IP stay; nothing else restarts.
    assert {p.metadata.name for p in _ready_pods(cluster, INSTALL_NAMESPACE)} >= {name}


def test_a_frozen_leader_loses_the_lease_and_its_liveness_probe_restarts_it(cluster: Cluster) -> None:
    """A process that stops answering (SIGSTOP) is what the liveness probe is for, and it must not
    keep the cluster without a leader meanwhile."""
    holder = _lease_holder(cluster, INSTALL_NAMESPACE)
    assert holder
    pod = cluster.core.read_namespaced_pod(holder, INSTALL_NAMESPACE)
    restarts = _restart_count(pod)
    ns = Namespace.create(cluster.api, prefix="frozen")
    _create_credential(ns, cluster.fake_auth, "frozen-route", user="frozen-user")
    ns.ready_token("frozen-route")
    frozen_at = time.monotonic()
    os.kill(cluster.node.container_pid(_container_id(pod)), signal.SIGSTOP)
    watch = _TokenWatch(ns, ("frozen-route",))
    took_over_after: float | None = None

    def restarted() -> bool:
        nonlocal took_over_after
        watch.check()
        if took_over_after is None and _lease_holder(cluster, INSTALL_NAMESPACE) not in (None, holder):
            took_over_after = time.monotonic() - frozen_at
        return _restart_count(cluster.core.read_namespaced_pod(holder, INSTALL_NAMESPACE)) > restarts

    eventually(restarted, timeout=LIVENESS_RESTART_TIMEOUT_SECONDS, interval=0.5, what="liveness restart")
    restarted_after = time.monotonic() - frozen_at
    SUMMARY.append(
        f"e2e: a frozen leader (SIGSTOP): the standby held the Lease after {took_over_after or 0:.1f}s; "
        f"liveness restarted the frozen container after {restarted_after:.0f}s"
    )
    assert took_over_after is not None, "the standby never took over from the frozen leader"
    # It waited out the Lease (the frozen one could not hand it over), but no longer than a few retries.
    assert LEASE_DURATION_SECONDS - 3 <= took_over_after < LEASE_DURATION_SECONDS + 15
    events = cluster.core.list_namespaced_event(
        INSTALL_NAMESPACE, field_selector=f"involvedObject.name={holder}"
    )
    assert any(e.reason == "Unhealthy" and "Liveness" in (e.message or "") for e in events.items)
    _wait_for_ready_pods(cluster, INSTALL_NAMESPACE, image_tag=FIRST_TAG)
    watch.check()


def test_upgrade_replaces_pods_one_at_a_time_without_a_login_or_a_gap(cluster: Cluster) -> None:
    # Tokens that outlive the rollout: any login during it would be a restart that did not resume.
    cluster.fake_auth.access_lifetime = UPGRADE_TOKEN_LIFETIME_SECONDS
    ns = Namespace.create(cluster.api, prefix="upgrade")
    _create_credential(ns, cluster.fake_auth, "upgrade-route", user="upgrade-user")
    ns.ready_token("upgrade-route")
    old = {pod.metadata.name for pod in _ready_pods(cluster, INSTALL_NAMESPACE)}
    logins_before = len(_logins(cluster, "upgrade-user"))
    cluster.load_image(SECOND_TAG)
    overlay = _overlay(cluster, "upgrade", INSTALL, SECOND_TAG, namespace=INSTALL_NAMESPACE)
    cluster.kubectl("apply", "-k", str(overlay))
    watch = _TokenWatch(ns, ("upgrade-route",))
    most_pods, fewest_ready = 0, 2

    def rolled_out() -> bool:
        nonlocal most_pods, fewest_ready
        watch.check()
        pods = _pods(cluster, INSTALL_NAMESPACE)
        live = [pod for pod in pods if pod.metadata.deletion_timestamp is None]
        most_pods = max(most_pods, len(live))
        fewest_ready = min(fewest_ready, sum(1 for pod in live if _is_ready(pod)))
        return len(live) == 2 and all(_is_ready(p) and _image_tag(p) == SECOND_TAG for p in live)

    eventually(rolled_out, timeout=READY_TIMEOUT_SECONDS * 2, interval=0.2, what="rollout to the second tag")
    new = {pod.metadata.name for pod in _ready_pods(cluster, INSTALL_NAMESPACE)}
    assert not new & old
    assert most_pods <= 3, f"{most_pods} pods at once: more than one replaced at a time (maxSurge 1)"
    assert fewest_ready >= 2, "a replica was taken down before its replacement was Ready (maxUnavailable 0)"
    watch.check()
    assert len(_logins(cluster, "upgrade-user")) == logins_before, "the new pods logged in again"
    # The new leader serves: a new credential gets its token from one of the new pods.
    _create_credential(ns, cluster.fake_auth, "upgrade-new", user="upgrade-user")
    ns.ready_token("upgrade-new")
    assert {call.peer for call in _logins(cluster, "upgrade-user")[logins_before:]} <= set(
        _pod_ips(cluster, INSTALL_NAMESPACE).values()
    )


def test_the_leader_stays_within_its_memory_limit_serving_many_credentials(cluster: Cluster) -> None:
    """The Deployment's 384Mi limit, held by the leader's cgroup while it serves a few hundred."""
    # After a rollout (the test before) the old leader hands the Lease back as it stops and a
    # standby takes it on its next try: the Lease may be held by no one for a moment.
    holder = eventually(
        lambda: _lease_holder(cluster, INSTALL_NAMESPACE), timeout=60, what="a replica holding the Lease"
    )
    pod = cluster.core.read_namespaced_pod(holder, INSTALL_NAMESPACE)
    restarts = _restart_count(pod)
    namespaces = [Namespace.create(cluster.api, prefix="load") for _ in range(LOAD_NAMESPACES)]
    started = time.monotonic()
    for ns in namespaces:
        for index in range(LOAD_CREDENTIALS // LOAD_NAMESPACES):
            _create_credential(ns, cluster.fake_auth, f"load-{index}", user="load-user")

    def served() -> bool:
        return sum(_token_secrets(cluster, ns.name) for ns in namespaces) == LOAD_CREDENTIALS

    eventually(served, timeout=300, interval=1, what=f"{LOAD_CREDENTIALS} token Secrets")
    all_served = time.monotonic() - started
    cgroup = _memory_cgroup(cluster.node.container_pid(_container_id(pod)))
    limit = int((cgroup / "memory.limit_in_bytes").read_text())
    peak = int((cgroup / "memory.max_usage_in_bytes").read_text())
    SUMMARY.append(
        f"e2e: the leader pod served {LOAD_CREDENTIALS} credentials in {all_served:.0f}s; container memory "
        f"peak {peak / 2**20:.0f} MiB of its {limit / 2**20:.0f} MiB limit"
    )
    assert limit == 384 * 2**20, "the manifests' memory limit is not the container's cgroup limit"
    assert peak < limit
    assert _restart_count(cluster.core.read_namespaced_pod(holder, INSTALL_NAMESPACE)) == restarts


# --- the namespaced install -------------------------------------------------------------------------


def test_the_namespaced_install_runs_in_one_namespace(cluster: Cluster) -> None:
    # The cluster-wide operator steps aside first (as the uninstall in docs/operations.md says:
    # only its Deployment).
    cluster.kubectl("delete", "deployment", DEPLOYMENT, "-n", INSTALL_NAMESPACE, "--wait=true")
    team = Namespace.create(cluster.api, prefix="team")
    other = Namespace.create(cluster.api, prefix="other")
    overlay = _overlay(cluster, "namespaced", NAMESPACED_FILE, SECOND_TAG, namespace=None)
    cluster.kubectl("apply", "-f", str(cluster.release / CRDS_FILE))
    cluster.kubectl("apply", "-n", team.name, "-k", str(overlay))
    _wait_for_ready_pods(cluster, team.name, image_tag=SECOND_TAG)
    holder = eventually(
        lambda: _lease_holder(cluster, team.name), timeout=60, what="a Lease in the team namespace"
    )
    assert holder in _pod_ips(cluster, team.name)

    _create_credential(team, cluster.fake_auth, "team-route", user="team-user")
    _create_credential(other, cluster.fake_auth, "other-route", user="other-user")
    team.ready_token("team-route")
    assert (token_expiry(team.secret("team-route")) or 0) > time.time()
    assert other.secret("other-route") is None, "the namespaced operator served another namespace"
    assert other.ready("other-route") is None


# --- helpers ----------------------------------------------------------------------------------------


def _overlay(cluster: Cluster, name: str, base: str, tag: str, namespace: str | None) -> Path:
    """What a user writes over a downloaded release file: the image reference, the allowed Auth API
    host and its CA; nothing else. kustomize reads a file resource only from inside the overlay."""
    directory = cluster.work_dir / "overlays" / name
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cluster.release / base, directory / base)
    (directory / "auth-ca.crt").write_bytes(cluster.fake_auth.ca_file.read_bytes())
    args = "/spec/template/spec/containers/0/args/-"
    patch = [
        {"op": "add", "path": args, "value": f"--allowed-auth-host={POD_GATEWAY}:{cluster.fake_auth.port}"},
        {"op": "add", "path": args, "value": f"--auth-ca-file={CA_MOUNT}/auth-ca.crt"},
        {
            "op": "add",
            "path": "/spec/template/spec/volumes/-",
            "value": {"name": "auth-ca", "configMap": {"name": "auth-ca"}},
        },
        {
            "op": "add",
            "path": "/spec/template/spec/containers/0/volumeMounts/-",
            "value": {"name": "auth-ca", "mountPath": CA_MOUNT, "readOnly": True},
        },
    ]
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base],
        "images": [{"name": IMAGE_REPOSITORY, "newName": OPERATOR_IMAGE_REPOSITORY, "newTag": tag}],
        "configMapGenerator": [{"name": "auth-ca", "files": ["auth-ca.crt"]}],
        "patches": [{"target": {"kind": "Deployment", "name": DEPLOYMENT}, "patch": json.dumps(patch)}],
    }
    if namespace is not None:
        kustomization["namespace"] = namespace
    (directory / "kustomization.yaml").write_text(json.dumps(kustomization, indent=2) + "\n")
    return directory


def _logins(cluster: Cluster, user: str) -> list[Call]:
    return [call for call in cluster.fake_auth.calls if call.endpoint == "password" and call.username == user]


def _create_credential(ns: Namespace, fake_auth: FakeAuthAPI, name: str, user: str) -> None:
    """Each test logs in as a user of its own, so its login count is its own."""
    fake_auth.add_user(user, PASSWORD)
    if ns.secret("login") is None:
        ns.create_login_secret("login", user, PASSWORD)
    ns.create_credential(name, {"credentialsSecretRef": {"name": "login"}, "authURL": fake_auth.base_url})


class _TokenWatch:
    """Reads the credentials' token Secrets at every check and fails the moment one holds an expired token."""

    def __init__(self, ns: Namespace, names: tuple[str, ...]) -> None:
        self._ns, self._names = ns, names
        self._seen: dict[str, str] = {}
        self.replacements = 0

    def check(self) -> None:
        for name in self._names:
            secret = self._ns.secret(name)
            assert secret is not None, f"Secret {name} disappeared"
            assert (token_expiry(secret) or 0) > time.time(), f"Secret {name} holds an expired token"
            token = secret["data"]["token"]  # as stored: only compared
            if self._seen.get(name) not in (None, token):
                self.replacements += 1
            self._seen[name] = token

    def until(self, done: Callable[[], bool], timeout: float) -> None:
        def checked() -> bool:
            self.check()
            return done()

        eventually(checked, timeout=timeout, interval=0.25, what="tokens replaced in time")


def _pods(cluster: Cluster, namespace: str) -> list[Any]:
    selector = "app.kubernetes.io/name=simacan-token-operator,app.kubernetes.io/component=operator"
    return list(cluster.core.list_namespaced_pod(namespace, label_selector=selector).items)


def _ready_pods(cluster: Cluster, namespace: str) -> list[Any]:
    return [
        pod for pod in _pods(cluster, namespace) if pod.metadata.deletion_timestamp is None and _is_ready(pod)
    ]


def _wait_for_ready_pods(cluster: Cluster, namespace: str, image_tag: str) -> list[Any]:
    def both_ready() -> list[Any] | None:
        pods = [pod for pod in _pods(cluster, namespace) if pod.metadata.deletion_timestamp is None]
        ready = [pod for pod in pods if _is_ready(pod) and _image_tag(pod) == image_tag]
        return ready if len(ready) == 2 == len(pods) else None

    try:
        return eventually(both_ready, timeout=READY_TIMEOUT_SECONDS, interval=0.5, what="two Ready replicas")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{_diagnosis(cluster, namespace)}") from error


def _diagnosis(cluster: Cluster, namespace: str) -> str:
    lines = [cluster.kubectl("get", "pods,events", "-n", namespace, "-o", "wide")]
    for pod in _pods(cluster, namespace):
        log = cluster.node.container_log(namespace, pod.metadata.name, "operator")
        lines.append(f"--- {pod.metadata.name} log tail:")
        lines.extend(line.text for line in log[-20:])
    return "\n".join(lines)


def _is_ready(pod: Any) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _restart_count(pod: Any) -> int:
    return sum(status.restart_count for status in pod.status.container_statuses or [])


def _container_id(pod: Any) -> str:
    statuses = pod.status.container_statuses or []
    assert statuses and statuses[0].container_id, f"{pod.metadata.name} has no running container"
    return str(statuses[0].container_id)


def _image_tag(pod: Any) -> str:
    return str(pod.spec.containers[0].image).rsplit(":", 1)[-1]


def _pod_ips(cluster: Cluster, namespace: str) -> dict[str, str]:
    return {pod.metadata.name: pod.status.pod_ip for pod in _ready_pods(cluster, namespace)}


def _in_pod_subnet(ip: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(POD_SUBNET)


def _lease_holder(cluster: Cluster, namespace: str) -> str | None:
    try:
        lease: Any = client.CoordinationV1Api(cluster.api).read_namespaced_lease(LEASE, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return lease.spec.holder_identity or None


def _memory_cgroup(pid: int) -> Path:
    """The cgroup v1 memory directory of a process (this machine's kubelet runs on cgroup v1)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    raise AssertionError(f"no memory cgroup for {pid}")


def _token_secrets(cluster: Cluster, namespace: str) -> int:
    secrets: Any = cluster.core.list_namespaced_secret(namespace)
    return sum(
        1 for item in secrets.items if item.metadata.name.startswith("load-") and "token" in (item.data or {})
    )


def _root_mount_options(pid: int) -> set[str]:
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            return set(fields[5].split(","))
    raise AssertionError(f"no root mount in /proc/{pid}/mountinfo")


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the metrics:\n{text[:2000]}")


_fetches = 0
ANSWER_END = "--8<--"


def _fetch_in_pod_network(cluster: Cluster, *urls: str) -> list[str]:
    """GET each URL from a busybox pod on the pod network and return the bodies of 200 answers.

    busybox's nc speaks the HTTP/1.0 (its static wget crashed here on the operator's answers).
    """
    global _fetches
    _fetches += 1
    name = f"fetch-{_fetches}"
    fetches, prints = [], []
    for index, url in enumerate(urls):
        parsed = urllib.parse.urlsplit(url)
        request = f"GET {parsed.path} HTTP/1.0\\r\\nHost: {parsed.netloc}\\r\\n\\r\\n"
        # stdin stays open a while: aiohttp drops a request whose client half-closes before the answer.
        fetches.append(
            f"(printf '{request}'; sleep 5) | nc -w 10 {parsed.hostname} {parsed.port} > /tmp/{index} &"
        )
        prints.append(f"cat /tmp/{index}; echo; echo '{ANSWER_END}'")
    script = "\n".join([*fetches, "wait", *prints])
    container = {
        "name": "fetch",
        "image": BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", script],
    }
    pod: Any = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False, "containers": [container]},
    }
    Namespace(cluster.api, "default").create_pod(pod)
    eventually(
        lambda: _phase(cluster, name) in ("Succeeded", "Failed"),
        timeout=60,
        interval=0.25,
        what=f"pod {name} finished",
    )
    text = "\n".join(line.text for line in cluster.node.container_log("default", name, "fetch"))
    answers = [part.strip() for part in text.split(ANSWER_END)[:-1]]
    assert len(answers) == len(urls), f"pod {name} printed:\n{text}"
    bodies = []
    for url, answer in zip(urls, answers, strict=True):
        head, _, body = answer.partition("\n\n")
        assert head.startswith("HTTP/") and head.split()[1] == "200", f"{url} answered:\n{answer[:500]}"
        bodies.append(body)
    return bodies


def _phase(cluster: Cluster, name: str) -> str:
    pod: Any = cluster.core.read_namespaced_pod(name, "default")
    return str(pod.status.phase)
