"""A dict-backed stand-in for the worker's Kubernetes seam (worker.KubeSeam), for in-process passes.

It keeps what the API server would: resourceVersions (a stale replace or status patch gets
409), 404 for missing objects, the merge-patch semantics of the status subresource, and every
Event. It also counts writes, which is what the table tests assert on. Of a credential it keeps
only its resourceVersion and status: `watched` gives a body as a watch event would deliver it.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from simacan_token_operator.kube.client import KubeError, ObjectRef, StampPage, WorkloadStamp, decoded_keeping
from simacan_token_operator.model.body import Body
from simacan_token_operator.model.clusterspec import OWNER_LABEL


@dataclass(frozen=True)
class RecordedEvent:
    namespace: str
    name: str
    type: str
    reason: str
    message: str


@dataclass
class FakeKube:
    secrets: dict[tuple[str, str], Body] = field(default_factory=dict)
    statuses: dict[tuple[str, str], Body] = field(default_factory=dict)
    events: list[RecordedEvent] = field(default_factory=list)
    secret_writes: list[tuple[str, str]] = field(default_factory=list)
    """(verb, name) of every successful create or replace."""
    status_patches: int = 0
    """Successful status patches (a no-op patch included, as the API server answers it)."""
    status_conflicts: int = 0
    """Status patches refused with 409: their resourceVersion was not the credential's."""
    status_requests: list[tuple[tuple[str, str], str, int, str]] = field(default_factory=list)
    """Every status patch: the credential's (namespace, name), the resourceVersion it carried,
    the answer's HTTP code (200, 404, 409) and the resourceVersion after it ("" if refused)."""
    credential_versions: dict[tuple[str, str], str] = field(default_factory=dict)
    """The resourceVersion of each credential, by (namespace, name); namespace empty for the cluster kind."""
    secret_deletes: list[tuple[str, str]] = field(default_factory=list)
    workloads: dict[tuple[str, str, str], Body] = field(default_factory=dict)
    forbidden_namespaces: set[str] = field(default_factory=set)
    forbidden_workload_verbs: set[tuple[str, str]] = field(default_factory=set)
    """(verb, kind) the operator's role lacks: get or patch on Deployment, StatefulSet, DaemonSet (403)."""
    list_faults: list[KubeError] = field(default_factory=list)
    """Raised, in order, by the next workload lists instead of listing."""
    workload_pages: list[tuple[str, str, int]] = field(default_factory=list)
    """(namespace, kind, limit) of every page of workload stamps listed."""
    full_reads: list[tuple[str, str, str]] = field(default_factory=list)
    """(namespace, kind, name) of every workload read in full for the stale-consumer check."""
    restarts: list[tuple[str, str, str]] = field(default_factory=list)
    """(kind, name, restartedAt) of every rollout restart."""
    write_faults: list[KubeError] = field(default_factory=list)
    """Raised, in order, by the next Secret writes instead of writing: an API server's 409, 429, 5xx."""
    secret_reads: list[tuple[str, str]] = field(default_factory=list)
    """(namespace, name) of every Secret GET."""
    secret_log: list[tuple[str, str, str]] = field(default_factory=list)
    """(namespace, name, resourceVersion) of every Secret change, "" for a deletion: what the
    Secret watch would report (tests hand them on with `watch_events`)."""
    lost_answers: int = 0
    """The next this many Secret creates are stored, but the caller gets a timeout: the request
    reached the API server, its answer never came back."""
    held_creates: int = 0
    """The next this many Secret creates time out without being stored yet: they land when the
    test calls land_held() (a slow API server that finishes after the caller gave up)."""
    held: list[tuple[str, Body]] = field(default_factory=list)
    on_timeout: Callable[[], None] | None = None
    """Called as a lost or held create times out, before its caller hears of it: what else
    happens at that moment (a namespace deselected)."""
    _version: int = 0

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    # -- what a user or another writer does ---------------------------------------------------

    def put_secret(self, namespace: str, body: Mapping[str, Any]) -> Body:
        stored = copy.deepcopy(dict(body))
        existing = self.secrets.get((namespace, stored["metadata"]["name"]))
        uid = (existing or stored)["metadata"].get("uid") or str(uuid.uuid4())  # kept, as the server does
        stored["metadata"] = {**stored["metadata"], "namespace": namespace, "uid": uid}
        stored["metadata"]["resourceVersion"] = self._next_version()
        self.secrets[(namespace, stored["metadata"]["name"])] = stored
        self.secret_log.append((namespace, stored["metadata"]["name"], stored["metadata"]["resourceVersion"]))
        return copy.deepcopy(stored)

    def watched(self, body: Mapping[str, Any]) -> Body:
        """`body` as a watch event delivers it: with the credential's resourceVersion (a new
        credential gets one) and its status as stored."""
        meta = body["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        if key not in self.credential_versions:
            self.credential_versions[key] = self._next_version()
        delivered = copy.deepcopy(dict(body))
        delivered["metadata"]["resourceVersion"] = self.credential_versions[key]
        delivered["status"] = copy.deepcopy(self.statuses.get(key))
        return delivered

    def edited(self, namespace: str, name: str) -> None:
        """Someone changed the credential's spec or metadata: a new resourceVersion."""
        self.credential_versions[(namespace, name)] = self._next_version()

    def put_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Another writer's unconditional merge patch of the status (a user's `kubectl patch
        --subresource=status`, a former leader's late patch)."""
        self._merge_status((namespace, name), status)

    def _merge_status(self, key: tuple[str, str], status: Mapping[str, Any]) -> Body:
        previous = self.statuses.get(key, {})
        merged = dict(previous)
        for name, value in status.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = copy.deepcopy(value)
        if merged != previous or key not in self.statuses:  # as the server: a no-op keeps the version
            self.statuses[key] = merged
            self.credential_versions[key] = self._next_version()
        return {
            "metadata": {"resourceVersion": self.credential_versions[key]},
            "status": copy.deepcopy(merged),
        }

    def patches_of(self, namespace: str, name: str) -> list[tuple[str, int, str]]:
        """(resourceVersion carried, HTTP code, resourceVersion after) of every status patch of
        one credential."""
        wanted = (namespace, name)
        return [(sent, code, after) for key, sent, code, after in self.status_requests if key == wanted]

    def remove_secret(self, namespace: str, name: str) -> None:
        del self.secrets[(namespace, name)]
        self.secret_log.append((namespace, name, ""))

    def watch_events(self) -> list[tuple[str, str, str]]:
        """The Secret changes since the last call, as the metadata-only Secret watch reports them."""
        events, self.secret_log = self.secret_log, []
        return events

    def secret_versions(self) -> dict[tuple[str, str], str]:
        """Every Secret's resourceVersion, as a list of all namespaces returns them."""
        return {key: secret["metadata"]["resourceVersion"] for key, secret in self.secrets.items()}

    def event_reasons(self, name: str | None = None) -> list[str]:
        return [e.reason for e in self.events if name is None or e.name == name]

    # -- the seam -----------------------------------------------------------------------------

    def land_held(self) -> list[tuple[str, str]]:
        """The held creates reach the store now; returns their (namespace, name)."""
        landed, self.held = self.held, []
        return [
            (namespace, self.put_secret(namespace, body)["metadata"]["name"]) for namespace, body in landed
        ]

    async def read_secret(self, namespace: str, name: str) -> Body | None:
        self.secret_reads.append((namespace, name))
        secret = self.secrets.get((namespace, name))
        return copy.deepcopy(secret) if secret is not None else None

    async def create_secret(self, namespace: str, body: Body) -> Body:
        if self.write_faults:
            raise self.write_faults.pop(0)
        name = body["metadata"]["name"]
        if (namespace, name) in self.secrets:
            raise KubeError(f"creating Secret {namespace}/{name}", 409, "AlreadyExists")
        timeout = KubeError(f"creating Secret {namespace}/{name}", 0, "read timed out")
        if self.held_creates:
            self.held_creates -= 1
            self.held.append((namespace, copy.deepcopy(body)))
            self._timed_out()
            raise timeout
        self.secret_writes.append(("create", name))
        stored = self.put_secret(namespace, body)
        if self.lost_answers:
            self.lost_answers -= 1
            self._timed_out()
            raise timeout
        return stored

    def _timed_out(self) -> None:
        if self.on_timeout is not None:
            self.on_timeout()

    async def replace_secret(self, namespace: str, body: Body) -> Body:
        if self.write_faults:
            raise self.write_faults.pop(0)
        name = body["metadata"]["name"]
        current = self.secrets.get((namespace, name))
        if current is None:
            raise KubeError(f"replacing Secret {namespace}/{name}", 404, "NotFound")
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise KubeError(f"replacing Secret {namespace}/{name}", 409, "Conflict")
        self.secret_writes.append(("replace", name))
        return self.put_secret(namespace, body)

    async def delete_secret(self, namespace: str, name: str, uid: str) -> None:
        current = self.secrets.get((namespace, name))
        if current is not None and current["metadata"].get("uid", uid) == uid:
            self.remove_secret(namespace, name)
            self.secret_deletes.append((namespace, name))

    async def namespaces_holding(self, owner_uid: str) -> set[str]:
        return {
            ns
            for (ns, _), secret in self.secrets.items()
            if (secret["metadata"].get("labels") or {}).get(OWNER_LABEL) == owner_uid
        }

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any], resource_version: str
    ) -> Body:
        """A merge patch with the resourceVersion precondition the real API server checks."""
        action = f"updating the status of {plural} {namespace}/{name}"
        key = (namespace, name)
        current = self.credential_versions.get(key)
        if current is None:
            self.status_requests.append((key, resource_version, 404, ""))
            raise KubeError(action, 404, "NotFound")
        if resource_version != current:
            self.status_requests.append((key, resource_version, 409, ""))
            self.status_conflicts += 1
            raise KubeError(action, 409, "the object has been modified")
        self.status_patches += 1
        answer = self._merge_status(key, status)
        self.status_requests.append((key, resource_version, 200, answer["metadata"]["resourceVersion"]))
        return answer

    async def post_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        self.events.append(RecordedEvent(ref.namespace, ref.name, type_, reason, message))

    def _authorize(self, verb: str, kind: str, action: str) -> None:
        if (verb, kind) in self.forbidden_workload_verbs:
            raise KubeError(action, 403, f"{kind.lower()}s.apps is forbidden: cannot {verb}")

    async def read_workload(self, namespace: str, kind: str, name: str) -> Body | None:
        self._authorize("get", kind, f"reading {kind} {namespace}/{name}")
        workload = self.workloads.get((namespace, kind, name))
        return copy.deepcopy(workload) if workload is not None else None

    async def list_workload_stamps(
        self, namespace: str, kind: str, limit: int, continue_token: str | None
    ) -> StampPage:
        """By name, `limit` at a time; the continue token is the last name of the page."""
        if namespace in self.forbidden_namespaces:
            raise KubeError(f"listing {kind}s in {namespace}", 403, "Forbidden")
        if self.list_faults:
            raise self.list_faults.pop(0)
        self.workload_pages.append((namespace, kind, limit))
        names = sorted(n for (ns, k, n) in self.workloads if (ns, k) == (namespace, kind))
        after = [name for name in names if continue_token is None or name > continue_token][:limit]
        stamps = []
        for name in after:
            meta = self.workloads[(namespace, kind, name)]["metadata"]
            stamps.append(WorkloadStamp(name, meta["uid"], meta["generation"]))
        more = bool(after) and after[-1] != names[-1]
        return StampPage(tuple(stamps), after[-1] if more else None)

    async def read_workload_fields(
        self, namespace: str, kind: str, name: str, keep: frozenset[str]
    ) -> Body | None:
        """As kube.Kube decodes it: only the keys in `keep` (and the stamp's), at any depth."""
        workload = self.workloads.get((namespace, kind, name))
        self.full_reads.append((namespace, kind, name))
        if workload is None:
            return None
        stamp = {"metadata", "name", "uid", "generation"}
        return decoded_keeping(json.dumps(workload).encode(), keep | stamp)

    async def restart_workload(
        self, namespace: str, kind: str, name: str, resource_version: str, annotation: str, value: str
    ) -> None:
        self._authorize("patch", kind, f"restarting {kind} {namespace}/{name}")
        workload = self.workloads.get((namespace, kind, name))
        if workload is None:
            raise KubeError(f"restarting {kind} {namespace}/{name}", 404, "NotFound")
        if workload["metadata"]["resourceVersion"] != resource_version:
            raise KubeError(f"restarting {kind} {namespace}/{name}", 409, "Conflict")
        template = workload.setdefault("spec", {}).setdefault("template", {})
        template.setdefault("metadata", {}).setdefault("annotations", {})[annotation] = value
        workload["metadata"]["resourceVersion"] = self._next_version()
        workload["metadata"]["generation"] += 1  # a pod-template change is a spec change
        self.restarts.append((kind, name, value))

    def put_workload(self, namespace: str, kind: str, body: Mapping[str, Any]) -> Body:
        """Create or replace, as the apps registry does: a new object gets a uid and generation
        1; a changed spec bumps the generation."""
        stored = copy.deepcopy(dict(body))
        current = self.workloads.get((namespace, kind, stored["metadata"]["name"]))
        generation = 1
        uid = str(uuid.uuid4())
        if current is not None:
            uid = current["metadata"]["uid"]
            changed = current.get("spec") != stored.get("spec")
            generation = current["metadata"]["generation"] + (1 if changed else 0)
        stored["metadata"] = {
            **stored["metadata"],
            "namespace": namespace,
            "uid": uid,
            "generation": generation,
            "resourceVersion": self._next_version(),
        }
        self.workloads[(namespace, kind, stored["metadata"]["name"])] = stored
        return stored

    def delete_workload(self, namespace: str, kind: str, name: str) -> None:
        del self.workloads[(namespace, kind, name)]
