"""Notice Secret changes without holding Secrets: a metadata-only watch, as cert-manager does.

kopf keeps a memory per watched object, so watching every Secret of a cluster through it
would cost memory per Secret and stream every Secret's data into this process. This watch
asks the API server for metadata only (PartialObjectMetadata) and keeps nothing but a
resourceVersion (watch.py). A thread per watched namespace (one in all for --all-namespaces)
reads the stream; events go to the event loop as (namespace, name). A watch that stays
silent past the read timeout (deadlines.py) is treated as dead: the thread lists again and
every worker looks again, since events may have been missed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from simacan_token_operator.kube.deadlines import WATCH_READ_TIMEOUT
from simacan_token_operator.kube.watch import MetadataWatch, Scope
from simacan_token_operator.model.body import Body
from simacan_token_operator.model.clusterspec import OWNER_LABEL


def secret_watch(
    api_client: Any,
    namespaces: Sequence[str],
    on_change: Callable[[str, str, str | None], None],
    on_resync: Callable[[], None],
    read_timeout: float = WATCH_READ_TIMEOUT,
) -> MetadataWatch:
    """`namespaces` empty means all namespaces. Callbacks run on the event loop. `on_change`
    gets the Secret's namespace, name, and the ClusterSimacanCredential uid of its owner label
    (None without one): a Secret of ours outside the selection is told from anyone else's."""

    def listed(_items: list[Any], after_break: bool) -> None:
        if after_break:  # events may have been missed while we were away
            on_resync()

    def changed(_type: str, obj: Body) -> None:
        meta = obj.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(OWNER_LABEL)
        on_change(str(meta.get("namespace")), str(meta.get("name")), str(owner) if owner else None)

    scoped: list[str | None] = list(namespaces) or [None]
    scopes = [
        Scope(
            "/api/v1/secrets" if namespace is None else f"/api/v1/namespaces/{namespace}/secrets",
            f"Secrets in {namespace or 'all namespaces'}",
            f"secret-watch:{namespace or '*'}",
        )
        for namespace in scoped
    ]
    # The list is only for a resourceVersion to watch from: one item is enough.
    return MetadataWatch(
        api_client, scopes, listed, changed, list_query={"limit": 1}, read_timeout=read_timeout
    )
