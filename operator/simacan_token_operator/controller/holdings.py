"""Where a cluster-wide credential's token Secret may exist, so that a namespace it stops
selecting loses that Secret: only ours (owner uid checked), only where it still exists."""

from __future__ import annotations

import logging
from collections.abc import Collection

from simacan_token_operator.controller.gates import Slot
from simacan_token_operator.controller.runtime import Runtime
from simacan_token_operator.reconcile import tokensecret

logger = logging.getLogger(__name__)


class Holdings:
    def __init__(self, who: str) -> None:
        self._who = who
        self._holding: set[str] | None = None
        """Listed by the owner label once; every selected namespace counts too, written or not,
        so a create whose answer was lost leaves nothing behind when the namespace is deselected."""

    async def release(
        self,
        runtime: Runtime,
        uid: str,
        secret_name: str,
        selected: frozenset[str],
        existing: Collection[str],
    ) -> None:
        """Delete our Secret in every namespace held but no longer selected."""
        if self._holding is None:
            async with Slot(runtime.kube_gate):
                self._holding = await runtime.kube.namespaces_holding(uid)
        self._holding |= selected
        for namespace in sorted(self._holding - selected):
            if namespace in existing:  # a deleted namespace takes its Secrets along
                async with Slot(runtime.kube_gate):
                    secret = await runtime.kube.read_secret(namespace, secret_name)
                    if secret is not None and tokensecret.owned_by(secret, uid):
                        await runtime.kube.delete_secret(namespace, secret_name, secret["metadata"]["uid"])
                        logger.info(
                            "%s: deleted Secret %s/%s (namespace no longer selected)",
                            self._who,
                            namespace,
                            secret_name,
                        )
            self._holding.discard(namespace)
