"""Notice Secret changes without holding Secrets: a metadata-only watch, as cert-manager does.

kopf keeps a memory per watched object, so watching every Secret of a cluster through it
would cost memory per Secret and stream every Secret's data into this process. This watch
asks the API server for metadata only (PartialObjectMetadata) and keeps nothing but a
resourceVersion (watch.py). A thread per watched namespace (one in all for --all-namespaces)
reads the stream; events go to the event loop as (namespace, name, resourceVersion): the
version tells the operator's own writes (whose version it knows) from everyone else's. A watch
that stays silent past the read timeout (deadlines.py) is treated as dead: the thread lists the
whole scope again (in pages, names and versions only), which tells what changed meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from simacan_token_operator.kube.deadlines import WATCH_READ_TIMEOUT
from simacan_token_operator.kube.watch import MetadataWatch, Scope
from simacan_token_operator.model.body import Body
from simacan_token_operator.model.clusterspec import OWNER_LABEL

RELIST_PAGE = 500
"""Items per page of the list after a break: one request per 500 Secrets, not one per credential."""

Versions = Mapping[tuple[str, str], str]
"""(namespace, name) -> resourceVersion of every Secret in a scope."""


def secret_watch(
    api_client: Any,
    namespaces: Sequence[str],
    on_change: Callable[[str, str, str, str | None], None],
    on_listed: Callable[[str | None, Versions | None], None],
    read_timeout: float = WATCH_READ_TIMEOUT,
) -> MetadataWatch:
    """`namespaces` empty means all namespaces. Callbacks run on the event loop. `on_change`
    gets the Secret's namespace, name, resourceVersion ("" when deleted), and the
    ClusterSimacanCredential uid of its owner label (None without one): a Secret of ours outside
    the selection is told from anyone else's.

    `on_change(namespace, name, version)`: the version is "" for a deletion. `on_listed(namespace,
    versions)` follows each list of a scope (namespace None: all of them); `versions` is None for
    the first list (only a resourceVersion to watch from) and every Secret's version after a
    break, when events may have been missed."""

    def listed(scope: Scope, items: list[Any], after_break: bool) -> None:
        where = scope.thread.partition(":")[2]
        namespace = None if where == "*" else where
        if not after_break:
            on_listed(namespace, None)
            return
        versions: dict[tuple[str, str], str] = {}
        for item in items:
            meta = item.get("metadata") if isinstance(item, dict) else None
            if isinstance(meta, dict):
                versions[(str(meta.get("namespace")), str(meta.get("name")))] = str(
                    meta.get("resourceVersion")
                )
        on_listed(namespace, versions)

    def changed(type_: str, obj: Body) -> None:
        meta = obj.get("metadata") or {}
        version = "" if type_ == "DELETED" else str(meta.get("resourceVersion") or "")
        owner = (meta.get("labels") or {}).get(OWNER_LABEL)
        on_change(str(meta.get("namespace")), str(meta.get("name")), version, str(owner) if owner else None)

    scoped: list[str | None] = list(namespaces) or [None]
    scopes = [
        Scope(
            "/api/v1/secrets" if namespace is None else f"/api/v1/namespaces/{namespace}/secrets",
            f"Secrets in {namespace or 'all namespaces'}",
            f"secret-watch:{namespace or '*'}",
        )
        for namespace in scoped
    ]
    # The first list is only for a resourceVersion to watch from: one item is enough.
    return MetadataWatch(
        api_client,
        scopes,
        listed,
        changed,
        list_query={"limit": 1},
        relist_page=RELIST_PAGE,
        read_timeout=read_timeout,
    )
