"""What a ClusterSimacanCredential asks for: which namespaces, and the namespaced view each one gets.

Pure. A ClusterSimacanCredential is served by running the ordinary one-namespace pass
(reconcile.py) once per selected namespace, on a SimacanCredential-shaped view of it whose
namespace is the target namespace. This module builds that view and decides the selection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from simacan_token_operator.model import limits
from simacan_token_operator.model.spec import (
    API_VERSION,
    GROUP,
    SpecError,
    parse_spec,
)

CLUSTER_PLURAL = "clustersimacancredentials"
CLUSTER_KIND = "ClusterSimacanCredential"
OWNER_LABEL = f"{GROUP}/cluster-credential-uid"
"""On every Secret a ClusterSimacanCredential writes: after a restart, one list by this label finds
the namespaces that still hold its Secret, so a namespace deselected meanwhile loses it too."""
PASSED_THROUGH = ("authURL", "secretName", "refreshBefore", "suspend")
DEFAULT_CREDENTIALS_NAMESPACE = "simacan-token-operator"
"""Where ClusterSimacanCredentials' credentials Secrets live when neither the operator's flag,
$POD_NAMESPACE nor the ServiceAccount's namespace file says otherwise."""


@dataclass(frozen=True)
class NamespaceInfo:
    labels: Mapping[str, str]
    terminating: bool


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values  # NotIn: an absent key matches, as in Kubernetes


@dataclass(frozen=True)
class ClusterSpec:
    """The parts that are not passed on to the per-namespace pass unchanged."""

    secret_name: str
    credentials_namespace: str
    credentials_secret: str
    selector: tuple[Requirement, ...] | None
    """None: no namespaceSelector (selects nothing); empty: `{}` (selects every namespace)."""
    namespaces: frozenset[str]

    def selects(self, name: str, info: NamespaceInfo) -> bool:
        if info.terminating:
            return False
        if name in self.namespaces:
            return True
        return self.selector is not None and all(r.matches(info.labels) for r in self.selector)

    def select(self, namespaces: Mapping[str, NamespaceInfo]) -> frozenset[str]:
        return frozenset(name for name, info in namespaces.items() if self.selects(name, info))


def parse_cluster_spec(name: str, spec: Mapping[str, Any], credentials_namespace: str) -> ClusterSpec:
    """Raises SpecError naming the field to fix. `credentials_namespace`: the one namespace a
    credentials Secret may be read from (--cluster-credentials-namespace), as cert-manager confines
    a ClusterIssuer's Secrets: whoever may create a ClusterSimacanCredential must not obtain a
    token from another team's password."""
    ref = spec.get("credentialsSecretRef")
    if not isinstance(ref, Mapping):
        raise SpecError("spec.credentialsSecretRef is required")
    _check_credentials_namespace(ref.get("namespace"), credentials_namespace)
    if not isinstance(spec.get("secretName"), str) or not spec["secretName"]:
        raise SpecError("spec.secretName is required")
    names = spec.get("namespaces") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SpecError("spec.namespaces must be a list of namespace names")
    parsed = parse_spec(name, credentials_namespace, namespaced_spec(spec, ""))  # checks the shared fields
    return ClusterSpec(
        secret_name=parsed.target_secret,
        credentials_namespace=credentials_namespace,
        credentials_secret=parsed.credentials_secret,
        selector=_selector(spec.get("namespaceSelector")),
        namespaces=frozenset(names),
    )


def _check_credentials_namespace(given: object, allowed: str) -> None:
    """Absent means `allowed`; any other namespace is refused before anything is read there."""
    if given is None or given == allowed:
        return
    shown = repr(given)[:80] if isinstance(given, str) else "not a string"
    raise SpecError(
        f"spec.credentialsSecretRef.namespace is {shown}, but a ClusterSimacanCredential's "
        f"credentials Secret must be in namespace {allowed!r} (the operator's "
        "--cluster-credentials-namespace): move the Secret there, then set that namespace or leave "
        "the field out"
    )


def _selector(value: object) -> tuple[Requirement, ...] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise SpecError("spec.namespaceSelector must be a LabelSelector")
    labels = value.get("matchLabels") or {}
    expressions = value.get("matchExpressions") or []
    if not isinstance(labels, Mapping) or not isinstance(expressions, list):
        raise SpecError("spec.namespaceSelector: matchLabels is a map, matchExpressions a list")
    if len(labels) > limits.MAX_SELECTOR_LABELS or len(expressions) > limits.MAX_SELECTOR_EXPRESSIONS:
        raise SpecError(
            f"spec.namespaceSelector: at most {limits.MAX_SELECTOR_LABELS} matchLabels and "
            f"{limits.MAX_SELECTOR_EXPRESSIONS} matchExpressions"
        )
    requirements = [Requirement(str(k), "In", frozenset({str(v)})) for k, v in labels.items()]
    for expression in expressions:
        if not isinstance(expression, Mapping):
            raise SpecError("spec.namespaceSelector.matchExpressions items must be objects")
        operator, values = expression.get("operator"), expression.get("values") or []
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist") or not isinstance(values, list):
            raise SpecError(f"spec.namespaceSelector: unknown operator {operator!r}")
        if len(values) > limits.MAX_SELECTOR_VALUES:
            raise SpecError(
                f"spec.namespaceSelector: a matchExpression has {len(values)} values; "
                f"at most {limits.MAX_SELECTOR_VALUES}"
            )
        if (operator in ("In", "NotIn")) != bool(values):
            raise SpecError(f"spec.namespaceSelector: {operator} needs values if and only if In or NotIn")
        requirements.append(Requirement(str(expression.get("key")), operator, frozenset(map(str, values))))
    return tuple(requirements)


def namespaced_spec(spec: Mapping[str, Any], uid: str) -> dict[str, Any]:
    """The SimacanCredential spec each namespace's pass sees: same login, same Secret, plus our label."""
    ref = spec.get("credentialsSecretRef") or {}
    template = dict(spec.get("secretTemplate") or {})
    template["labels"] = {**(template.get("labels") or {}), OWNER_LABEL: uid}
    view: dict[str, Any] = {
        "credentialsSecretRef": {k: v for k, v in ref.items() if k != "namespace"},
        "secretTemplate": template,
    }
    view.update({key: spec[key] for key in PASSED_THROUGH if key in spec})
    return view


def namespaced_view(credential: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """The ClusterSimacanCredential as one namespace's pass reads it: its Secret is written there,
    owned by the cluster-scoped object (Kubernetes allows a namespaced dependent of it)."""
    meta = credential["metadata"]
    return {
        "apiVersion": credential.get("apiVersion") or API_VERSION,
        "kind": CLUSTER_KIND,
        "metadata": {
            "name": meta["name"],
            "namespace": namespace,
            "uid": meta["uid"],
            "generation": meta.get("generation"),
            "annotations": meta.get("annotations") or {},
        },
        "spec": namespaced_spec(credential.get("spec") or {}, meta["uid"]),
    }


def namespace_info(body: Mapping[str, Any]) -> NamespaceInfo:
    meta = body.get("metadata") or {}
    phase = (body.get("status") or {}).get("phase")
    labels = meta.get("labels") or {}
    return NamespaceInfo(
        labels={str(k): str(v) for k, v in labels.items()},
        terminating=bool(meta.get("deletionTimestamp")) or phase == "Terminating",
    )
