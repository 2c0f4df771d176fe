"""Where a cluster-wide credential's token Secret exists outside its selection, so that a
namespace it stops selecting loses that Secret: only ours (owner uid checked), only where it
still exists.

Level-based: the namespaces holding our Secret are asked of the API server (one metadata-only
list by the owner label), never remembered from the writes this process saw answered. So a
create whose answer was lost, or one that landed after its namespace had left, is found like
any other. The list is made at the first round and whenever an existing namespace leaves the
selection; between those, a watch event for a Secret labelled as ours outside the selection (a
create that landed late) gets that one Secret read, not another cluster-wide list.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from simacan_token_operator.controller.gates import PASS
from simacan_token_operator.controller.runtime import Runtime
from simacan_token_operator.reconcile import tokensecret

logger = logging.getLogger(__name__)


class Holdings:
    def __init__(self, who: str) -> None:
        self._who = who
        self._released_for: frozenset[str] | None = None
        """The selection the last completed release left in place; None: none completed yet."""
        self._suspects: set[str] = set()
        """Namespaces outside the selection where a Secret labelled as ours changed since."""

    def suspect(self, namespace: str) -> None:
        """A Secret labelled as ours changed in `namespace`: if outside the selection, look there."""
        self._suspects.add(namespace)

    async def release(
        self,
        runtime: Runtime,
        uid: str,
        secret_name: str,
        selected: frozenset[str],
        existing: Collection[str],
    ) -> None:
        """Delete our Secret in every namespace that holds it but is no longer selected."""
        suspects, self._suspects = self._suspects - selected, set()
        try:
            left = self._released_for is None or any(
                namespace in existing for namespace in self._released_for - selected
            )  # not for a deleted namespace: it takes its Secrets along, and those come and go often
            if left:
                async with runtime.gates.slot(None, PASS):
                    suspects |= await runtime.kube.namespaces_holding(uid) - selected
            for namespace in sorted(suspects):
                if namespace in existing:  # a deleted namespace takes its Secrets along
                    await self._delete_ours(runtime, uid, namespace, secret_name)
        except BaseException:
            self._suspects |= suspects  # looked at again on the retry
            raise
        self._released_for = selected

    async def _delete_ours(self, runtime: Runtime, uid: str, namespace: str, secret_name: str) -> None:
        async with runtime.gates.slot(namespace, PASS):
            secret = await runtime.kube.read_secret(namespace, secret_name)
            if secret is None or not tokensecret.owned_by(secret, uid):
                return
            await runtime.kube.delete_secret(namespace, secret_name, secret["metadata"]["uid"])
        logger.info(
            "%s: deleted Secret %s/%s (namespace no longer selected)", self._who, namespace, secret_name
        )
