"""The workloads that consume a token Secret: who keeps a stale token, and who is due a restart.

Pure functions over workload objects (Deployment, StatefulSet, DaemonSet as dicts). An env var
(`env.valueFrom.secretKeyRef`, `envFrom.secretRef`) or a `subPath` mount is resolved once when a
container starts, so such a consumer holds its first token until it restarts; a whole-volume
mount sees every new token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .spec import GROUP, RestartTarget
from .tokensecret import parse_rfc3339

RESTARTED_AT_ANNOTATION = f"{GROUP}/restartedAt"


def _pod_spec(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}


def _containers(pod: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod.get(key) or []:
            if isinstance(container, Mapping):
                yield container


def _secret_volumes(pod: Mapping[str, Any], secret: str) -> set[str]:
    names: set[str] = set()
    for volume in pod.get("volumes") or []:
        if not isinstance(volume, Mapping):
            continue
        if (volume.get("secret") or {}).get("secretName") == secret:
            names.add(str(volume.get("name")))
        for source in (volume.get("projected") or {}).get("sources") or []:
            if isinstance(source, Mapping) and (source.get("secret") or {}).get("name") == secret:
                names.add(str(volume.get("name")))
    return names


def reads_once(workload: Mapping[str, Any], secret: str) -> bool:
    """Whether the workload reads the Secret only when a container starts."""
    pod = _pod_spec(workload)
    volumes = _secret_volumes(pod, secret)
    for container in _containers(pod):
        for env in container.get("env") or []:
            ref = ((env or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name") == secret:
                return True
        for source in container.get("envFrom") or []:
            if ((source or {}).get("secretRef") or {}).get("name") == secret:
                return True
        for mount in container.get("volumeMounts") or []:
            if (mount or {}).get("subPath") and mount.get("name") in volumes:
                return True
    return False


def stale(
    workloads: Sequence[tuple[str, Mapping[str, Any]]], secret: str, targets: Iterable[RestartTarget]
) -> tuple[str, ...]:
    """`Kind/name` of each (kind, workload) that reads the Secret once and is not restarted by us."""
    restarted = {str(target) for target in targets}
    found = {
        f"{kind}/{(workload.get('metadata') or {}).get('name')}"
        for kind, workload in workloads
        if reads_once(workload, secret)
    }
    return tuple(sorted(found - restarted))


def restarted_at(workload: Mapping[str, Any]) -> float | None:
    template = (workload.get("spec") or {}).get("template") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    return parse_rfc3339(annotations.get(RESTARTED_AT_ANNOTATION))


def holds_token_since(workload: Mapping[str, Any]) -> float | None:
    """When the workload's pods last (re)started by our hand, else when it was created."""
    return restarted_at(workload) or parse_rfc3339((workload.get("metadata") or {}).get("creationTimestamp"))
