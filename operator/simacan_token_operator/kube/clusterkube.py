"""The Kubernetes calls only a ClusterSimacanCredential needs, on top of kube.Kube's.

Same transport, deadlines and leader fence as every other write (a subclass, so the fence and
the Event memory are shared): the status of a cluster-scoped object, the one delete the
operator ever makes (its own Secret in a namespace that stopped matching), and a metadata-only
list of the Secrets one ClusterSimacanCredential wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simacan_token_operator.kube.client import METADATA_LIST, Body, Kube, KubeError, checked_name
from simacan_token_operator.model.clusterspec import CLUSTER_PLURAL, OWNER_LABEL
from simacan_token_operator.model.spec import GROUP, VERSION


class ClusterKube(Kube):
    async def patch_cluster_status(self, name: str, status: Mapping[str, Any]) -> Body:
        checked = checked_name("ClusterSimacanCredential", name)
        path = f"/apis/{GROUP}/{VERSION}/{CLUSTER_PLURAL}/{checked}/status"
        return await self._write(
            f"updating the status of ClusterSimacanCredential {name}",
            "PATCH",
            path,
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )

    async def delete_secret(self, namespace: str, name: str, uid: str) -> None:
        """Delete exactly the Secret read (uid precondition): a newer one of the same name stays."""
        where = checked_name("namespace", namespace)
        path = f"/api/v1/namespaces/{where}/secrets/{checked_name('Secret', name)}"
        try:
            await self._write(
                f"deleting Secret {namespace}/{name}",
                "DELETE",
                path,
                body={"preconditions": {"uid": uid}},
            )
        except KubeError as error:
            if error.status not in (404, 409):  # gone already, or replaced by someone else's
                raise

    async def namespaces_holding(self, owner_uid: str) -> set[str]:
        """Namespaces with a Secret labelled as written by this ClusterSimacanCredential (metadata only)."""
        listed = await self._call(
            "listing the Secrets of a ClusterSimacanCredential",
            "GET",
            "/api/v1/secrets",
            query={"labelSelector": f"{OWNER_LABEL}={owner_uid}"},
            accept=METADATA_LIST,
        )
        return {
            str(item["metadata"]["namespace"])
            for item in listed.get("items") or []
            if isinstance(item, Mapping) and isinstance(item.get("metadata"), Mapping)
        }
