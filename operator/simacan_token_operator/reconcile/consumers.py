"""The workloads that consume a token Secret: who keeps a stale token, and who is due a restart.

Pure functions over workload objects (Deployment, StatefulSet, DaemonSet as dicts). An env var
(`env.valueFrom.secretKeyRef`, `envFrom.secretRef`) or a `subPath`/`subPathExpr` mount is
resolved once when a container starts, so such a consumer holds its first token until it
restarts; a whole-volume mount sees every new token.

The stale-consumer check keeps no workload bodies: `verdict` turns one into the few names the
check needs, and `stale` works on those verdicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from simacan_token_operator.model.spec import GROUP, RestartTarget
from simacan_token_operator.reconcile.tokensecret import parse_rfc3339

RESTARTED_AT_ANNOTATION = f"{GROUP}/restartedAt"

TEMPLATE_FIELDS = frozenset(
    {
        "spec",
        "template",
        "initContainers",
        "containers",
        "ephemeralContainers",
        "env",
        "valueFrom",
        "secretKeyRef",
        "envFrom",
        "secretRef",
        "volumeMounts",
        "subPath",
        "subPathExpr",
        "volumes",
        "secret",
        "secretName",
        "projected",
        "sources",
        "name",
    }
)
"""Every JSON key `secrets_read_at_start` looks at, at any depth: a reader may drop all others
(annotations, managedFields, env values, commands) while it decodes a workload."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the stale-consumer check keeps of one workload."""

    kind: str
    name: str
    reads_at_start: frozenset[str]
    """The Secrets its containers read only when they start."""


@dataclass(frozen=True, slots=True)
class Survey:
    """The verdicts on a namespace's workloads that read some Secret at start."""

    verdicts: tuple[Verdict, ...]
    partial: bool = False
    """True when the namespace holds more workloads than the operator keeps verdicts for:
    the verdicts cover only some of them."""


def _pod_spec(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}


def _containers(pod: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod.get(key) or []:
            if isinstance(container, Mapping):
                yield container


def _secret_volumes(pod: Mapping[str, Any]) -> dict[str, set[str]]:
    """Volume name -> the Secrets it projects."""
    volumes: dict[str, set[str]] = {}
    for volume in pod.get("volumes") or []:
        if not isinstance(volume, Mapping):
            continue
        names = volumes.setdefault(str(volume.get("name")), set())
        secret = (volume.get("secret") or {}).get("secretName")
        if isinstance(secret, str):
            names.add(secret)
        for source in (volume.get("projected") or {}).get("sources") or []:
            projected = (source.get("secret") or {}).get("name") if isinstance(source, Mapping) else None
            if isinstance(projected, str):
                names.add(projected)
    return volumes


def secrets_read_at_start(workload: Mapping[str, Any]) -> frozenset[str]:
    """The Secrets the workload's containers read only when they start."""
    pod = _pod_spec(workload)
    volumes = _secret_volumes(pod)
    found: set[str] = set()
    for container in _containers(pod):
        for env in container.get("env") or []:
            ref = ((env or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
            if isinstance(ref.get("name"), str):
                found.add(ref["name"])
        for source in container.get("envFrom") or []:
            ref = (source or {}).get("secretRef") or {}
            if isinstance(ref.get("name"), str):
                found.add(ref["name"])
        for mount in container.get("volumeMounts") or []:
            if (mount or {}).get("subPath") or (mount or {}).get("subPathExpr"):
                found |= volumes.get(str(mount.get("name")), set())
    return frozenset(found)


def verdict(kind: str, workload: Mapping[str, Any]) -> Verdict:
    name = str((workload.get("metadata") or {}).get("name"))
    return Verdict(kind, name, secrets_read_at_start(workload))


def stale(verdicts: Iterable[Verdict], secret: str, targets: Iterable[RestartTarget]) -> tuple[str, ...]:
    """`Kind/name`, sorted, of each workload that reads the Secret once and is not restarted by us."""
    restarted = {str(target) for target in targets}
    found = {f"{v.kind}/{v.name}" for v in verdicts if secret in v.reads_at_start}
    return tuple(sorted(found - restarted))


def restarted_at(workload: Mapping[str, Any]) -> float | None:
    template = (workload.get("spec") or {}).get("template") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    return parse_rfc3339(annotations.get(RESTARTED_AT_ANNOTATION))


def holds_token_since(workload: Mapping[str, Any]) -> float | None:
    """When the workload's pods last (re)started by our hand, else when it was created."""
    return restarted_at(workload) or parse_rfc3339((workload.get("metadata") or {}).get("creationTimestamp"))
