"""The one value that both test tiers (in-process emulator, real control plane) hand to the tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ClusterHandle:
    """Where a cluster listens and how to reach it, so tests need not know which tier they run on."""

    name: str  # "emulator" or "real"
    server: str  # https://127.0.0.1:PORT or http://...
    kubeconfig: Path  # admin kubeconfig (what tests use)
    operator_kubeconfig: Path  # the identity the operator runs as (same file for the emulator)
    supports_garbage_collection: bool  # whether ownerReferences cascade on deletion
