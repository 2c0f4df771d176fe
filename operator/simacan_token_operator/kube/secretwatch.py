"""Notice Secret changes without holding Secrets: a metadata-only watch, as cert-manager does.

kopf keeps a memory per watched object, so watching every Secret of a cluster through it
would cost memory per Secret and stream every Secret's data into this process. This watch
asks the API server for metadata only (PartialObjectMetadata) and keeps nothing but a
resourceVersion (watch.py). A thread per watched namespace (one in all for --all-namespaces)
lists its scope (in pages, names and versions only), which tells which Secrets exist, then reads
the stream; events go to the event loop as (namespace, name, resourceVersion): the version tells
the operator's own writes (whose version it knows) from everyone else's. A watch that stays
silent past the read timeout (deadlines.py) is treated as dead: the thread lists the whole scope
again, which tells what changed meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from simacan_token_operator.kube.deadlines import WATCH_READ_TIMEOUT
from simacan_token_operator.kube.watch import MetadataWatch, Scope
from simacan_token_operator.model.body import Body
from simacan_token_operator.model.clusterspec import OWNER_LABEL

LIST_PAGE = 100
"""Items per page of a list: one request per 100 Secrets, not one read per credential. A page's
bytes are held while it is decoded and anyone may annotate a Secret (256 KiB in all): 100 bound
that to about 25 MiB, where 500 allowed 125 MiB."""

Versions = Mapping[tuple[str, str], str]
"""(namespace, name) -> resourceVersion of every Secret in a scope."""


def secret_watch(
    api_client: Any,
    namespaces: Sequence[str],
    on_change: Callable[[str, str, str, str | None], None],
    on_listed: Callable[[str | None, Versions, bool], None],
    read_timeout: float = WATCH_READ_TIMEOUT,
) -> MetadataWatch:
    """`namespaces` empty means all namespaces. Callbacks run on the event loop. `on_change`
    gets the Secret's namespace, name, resourceVersion ("" when deleted), and the
    ClusterSimacanCredential uid of its owner label (None without one): a Secret of ours outside
    the selection is told from anyone else's.

    `on_listed(namespace, versions, after_break)` follows each list of a scope (namespace None:
    all of them) with every Secret's version; `after_break`: events may have been missed since
    the previous list."""

    def listed(scope: Scope, items: list[tuple[str, str, str]], after_break: bool) -> None:
        where = scope.thread.partition(":")[2]
        namespace = None if where == "*" else where
        on_listed(namespace, {(ns, name): version for ns, name, version in items}, after_break)

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
    return MetadataWatch(api_client, scopes, listed, changed, list_page=LIST_PAGE, read_timeout=read_timeout)
