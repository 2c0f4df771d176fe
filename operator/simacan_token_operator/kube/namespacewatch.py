"""Namespaces' labels and deletion state, kept current by a metadata-only list and watch.

A ClusterSimacanCredential selects namespaces by label: a namespace that starts or stops
matching must be noticed within seconds, without polling. Like the Secret watch, a thread
reads the stream (watch.py; PartialObjectMetadata: labels and deletionTimestamp are all we
need) and hands changes to the event loop. A full list comes first, and again after any
break, so that the consumer always replaces its whole view with a complete one (`on_listed`)
before it gets single changes (`on_change`): a namespace deleted during a break cannot linger.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from simacan_token_operator.kube.watch import MetadataWatch, Scope
from simacan_token_operator.model.body import Body
from simacan_token_operator.model.clusterspec import NamespaceInfo, namespace_info


def namespace_watch(
    api_client: Any,
    on_listed: Callable[[dict[str, NamespaceInfo]], None],
    on_change: Callable[[str, NamespaceInfo | None], None],
) -> MetadataWatch:
    """Callbacks run on the event loop; `on_change` gets None for a deleted namespace."""

    def listed(_scope: Scope, items: list[Any], _after_break: bool) -> None:
        on_listed(
            {
                str(item["metadata"]["name"]): namespace_info(item)
                for item in items
                if isinstance(item, Mapping)
            }
        )

    def changed(type_: str, obj: Body) -> None:
        name = str(obj["metadata"]["name"])
        if type_ in ("ADDED", "MODIFIED"):
            on_change(name, namespace_info(obj))
        elif type_ == "DELETED":
            on_change(name, None)

    scope = Scope("/api/v1/namespaces", "namespaces", "namespace-watch")
    return MetadataWatch(api_client, [scope], listed, changed)
